"""The dialogue: what the caller said or pressed -> understanding -> what the flow does next.

One task per call consumes what listening heard, one input at a time: ASR off the loop, sentiment and
frustration, the escalation policy (checked before the flow answers, so an angry caller gets a person
rather than another menu), then the flow engine, whose actions become speech, listening expectations,
escalations and hang-ups. Barge-ins do not queue behind it: they cut playback at once, and the next
input is taken only once the cut is complete, so "uh-huh" can resume the reply from where it was cut.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from audio.resample import resample
from flows.actions import Action, Escalate, Hangup, Listen, OfferCallback, Say, SetFlag, VerificationEvent
from flows.context import CallContext, Turn
from flows.engine import CallerInput
from flows.pci import mask_card_numbers
from ivr.call_log import CallLog
from ivr.clock import Clock
from ivr.escalation import EscalationDecision
from ivr.hold_line import HoldLine
from ivr.keypad import Digits
from ivr.listening import BargeIn, Heard, Listening, LongSilence, Utterance
from ivr.prompts import ASR_RETRY
from ivr.services import Services
from ivr.slot_listening import answers_yes_no
from ivr.speech import Interruption, Speech
from ivr.turns import HowSaid, TurnLedger, TurnTiming
from models.asr import AsrOverloaded, Transcript
from models.intent import IntentResult

# Words of an acknowledgement that does not take the turn ("uh-huh", "okay", "right", "I see", "got it").
BACKCHANNEL_WORDS = frozenset(
    "uh huh uh-huh mm hmm mhm mm-hmm hm um oh ah aha okay ok right yeah yep sure alright all i see got it cool great".split()
)
_WORDS = re.compile(r"[^a-z\- ]+")


def is_backchannel(text: str) -> bool:
    """True for a short acknowledgement (or nothing intelligible) rather than an answer or a request."""
    words = _WORDS.sub(" ", text.lower()).split()
    return len(words) <= 3 and set(words) <= BACKCHANNEL_WORDS


class Dialogue:
    def __init__(
        self,
        services: Services,
        ctx: CallContext,
        call: CallLog,
        clock: Clock,
        *,
        listening: Listening,
        speech: Speech,
        ledger: TurnLedger,
        spawn: Callable[[Awaitable[None], str], asyncio.Task[None]],
        hang_up: Callable[[str], Awaitable[None]],
    ) -> None:
        self.services = services
        self.ctx = ctx
        self._call = call
        self._clock = clock
        self._listening = listening
        self._latest_reply: object | None = None
        self._latest_reply_heard = False
        self._speech = speech
        self._ledger = ledger
        self._spawn = spawn
        self._hang_up = hang_up
        self.nlu = services.new_nlu()
        self.outcome: str | None = None
        self._inputs: asyncio.Queue[Utterance | Digits | LongSilence] = asyncio.Queue()
        self._cutting: asyncio.Task[None] | None = None
        self._interrupted: Interruption | None = None
        self._hold: HoldLine | None = None
        self._asr_failures = 0  # in a row
        speech.on_tts_failure = self._tts_failed
        self._customer_recorded: str | None = None
        # What the escalator says while an input is being answered (the hold line): that input's reply on record,
        # its first frame the end of the turn's latency.
        self._said: list[str] | None = None
        self._said_timing: TurnTiming | None = None

    # -- the port escalation and the flow use ------------------------------------------------------
    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._call.log

    def say(self, text: str, prompt_id: str | None = None) -> None:
        first_frame = None
        if self._said is not None:
            if not self._said and self._said_timing is not None:
                first_frame = self._ledger.reply_requested(self._said_timing)
            self._said.append(text)
        self._speech.say(text, prompt_id=prompt_id, on_first_frame=first_frame)

    def record(self, kind: str, data: dict[str, object]) -> None:
        self._call.record(kind, data)

    def error(self, kind: str, message: str) -> None:
        self._call.error(kind, message)

    async def leave(self, reason: str) -> None:
        """The caller on hold chose a callback: let the goodbye play out, then hang up."""
        self.outcome = "callback"
        await self._speech.finished()
        await self._hang_up(reason)

    # -- what listening heard ----------------------------------------------------------------------
    def hear(self, item: Heard) -> None:
        if isinstance(item, BargeIn):
            self._cutting = self._spawn(self._barge_in(item), "barge-in")
        else:
            self._inputs.put_nowait(item)

    async def _barge_in(self, barge_in: BargeIn) -> None:
        interruption = await self._speech.interrupt()
        self._ledger.flush_unwritten()
        self._call.metrics.barge_ins.labels(barge_in.kind).inc()
        cut = interruption.cut
        self.record("barge_in", {"kind": barge_in.kind, "played_frames": cut.played_frames if cut else None})
        self._interrupted = interruption if barge_in.resumable and interruption.unheard else None

    async def _next_input(self) -> Utterance | Digits | LongSilence:
        item = await self._inputs.get()
        if self._cutting is not None:
            await asyncio.shield(self._cutting)  # the cut must be complete before the next reply starts
            self._cutting = None
        return item

    # -- the conversation --------------------------------------------------------------------------
    async def run(self) -> None:
        engine = self.services.new_engine(self.nlu, self.log)
        if not self.ctx.escalated:  # back from a transfer nobody answered: still on hold, not greeted again
            await self._act(engine.start(self.ctx), None)
        while True:
            item = await self._next_input()
            understood = await self._understand(item)
            if understood is None:
                continue
            inp, timing = understood
            if timing is not None:
                self._ledger.understanding(timing)
            if self.ctx.escalated:
                await self._on_hold(inp)
                continue
            guess = self.nlu.classify(inp.text) if inp.kind == "speech" else None
            # Only an understood request names the topic (and so the queue); a low-confidence guess does not.
            topic = guess.intent if guess and guess.confidence >= self.services.answer_threshold else None
            decision = self.services.escalator.check(self.ctx, last_intent=topic)
            if decision is not None:
                index = self._unanswered_turn(inp.text, guess) if guess is not None else None
                said: list[str] = []
                try:
                    await self._escalate(decision, said, timing if index is not None else None)
                finally:  # the caller's words are on record even if the handoff failed
                    if index is not None:
                        self._ledger.store(self.ctx, index, said, timing)
                continue
            await self._act(engine.handle(self.ctx, inp), timing)

    async def _understand(self, item: Utterance | Digits | LongSilence) -> tuple[CallerInput, TurnTiming | None] | None:
        if isinstance(item, Utterance):
            timing = self._ledger.speech_heard(item.last_voiced_at, item.endpointed_at)
            asked_at = self._clock.now()
            transcript = await self._transcribe(item)
            if transcript is None:
                return None
            # What the caller waited for: a transcript started during the trailing pause cost only what was left of
            # it; one asked for now, its wait for a free worker as well as the recognition itself.
            asr_s = self._clock.now() - asked_at
            # PCI: a card number said out loud is masked before anything (NLU, sentiment, flow, storage) sees it.
            text = mask_card_numbers(transcript.text.strip())
            if self._resume_after_backchannel(text):
                return None
            if not text:
                self.record("empty_transcript", {"duration_s": round(item.duration_s, 2)})
                return None
            sentiment = self.services.sentiment.score(text)
            self.ctx.last_loudness_spl_db = item.spl_db
            self.services.frustration.update(self.ctx, sentiment, loudness_spl_db=item.spl_db)
            self._ledger.transcribed(timing, asr_s, HowSaid(sentiment.compound, item.spl_db))
            return CallerInput(kind="speech", text=text, asr_confidence=transcript.confidence), timing
        if isinstance(item, Digits):
            self._interrupted = None
            return CallerInput(kind="dtmf", digits=item.digits), self._ledger.keys_heard()
        if self._speech.is_playing:
            return None  # a long silence while we talk is the caller listening
        self.services.frustration.update(self.ctx, self.services.sentiment.score(""), long_silence=True)
        self._ledger.silence_heard()
        return CallerInput(kind="silence"), None

    async def _transcribe(self, item: Utterance) -> Transcript | None:
        try:
            if item.early_transcript is not None:
                # Transcribed during the caller's trailing pause (`ivr.turn_end`): this audio, already under way.
                transcript = await item.early_transcript
            else:
                audio16 = resample(item.audio.astype(np.float32) / 32768.0, 8000, 16000)
                transcript = await self.services.asr.transcribe(
                    audio16, self.ctx.call_sid, vocabulary=self._listening.listen.vocabulary
                )
        except AsrOverloaded as exc:
            self.error("asr_overloaded", str(exc))
        except Exception as exc:  # noqa: BLE001 - a model failure must not end the call silently
            self.error("asr_failed", f"{type(exc).__name__}: {exc}")
        else:
            self._asr_failures = 0
            return transcript
        self._asr_failures += 1
        limit = self.services.settings.escalation.asr_failures
        if self.ctx.escalated:
            self._listening.restart_silence_timer()  # on hold already: nothing to ask again
        elif self._asr_failures >= limit:
            reason = f"Speech recognition failing ({self._asr_failures} utterances in a row not recognised)"
            await self._escalate(self.services.escalator.for_fault(self.ctx, "asr_failure", reason))
        else:
            self.say(ASR_RETRY, prompt_id="asr_retry")
        return None

    def _tts_failed(self, failures: int) -> None:
        """The caller cannot hear our replies: after a few failures in a row, a person takes over."""
        if failures >= self.services.settings.escalation.tts_failures and not self.ctx.escalated:
            reason = f"Speech synthesis failing ({failures} replies in a row could not be spoken)"
            self._spawn(self._escalate(self.services.escalator.for_fault(self.ctx, "tts_failure", reason)), "escalate")

    def _resume_after_backchannel(self, text: str) -> bool:
        """A cough, click or "uh-huh" does not end the bot's turn: replay from where it was cut."""
        interrupted, self._interrupted = self._interrupted, None
        if interrupted is None or not is_backchannel(text):
            return False
        # Cut while the last reply (the question itself) was playing: "yeah" over it is the answer.
        in_question = self._latest_reply_heard
        if in_question and answers_yes_no(self._listening.listen, text):
            self.record("answered_over_prompt", {"heard": text})
            return False
        self._speech.resume(interrupted)
        self.record("resumed_after_backchannel", {"heard": text})
        return True

    def _started(self, then: Callable[[float], None] | None) -> Callable[[float], None]:
        """A reply's first-frame callback that also notes whether the latest reply (the question, if the step
        asks one) has started playing (see `_resume_after_backchannel`)."""
        token = object()
        self._latest_reply, self._latest_reply_heard = token, False

        def first_frame(t: float) -> None:
            if self._latest_reply is token:
                self._latest_reply_heard = True
            if then is not None:
                then(t)

        return first_frame

    async def _on_hold(self, inp: CallerInput) -> None:
        """On hold for a person the flow is done; the hold line speaks on its own clock, keys go to it."""
        if inp.kind == "dtmf" and self._hold is not None and inp.digits:
            await self._hold.pressed(inp.digits)
        else:
            self._listening.restart_silence_timer()

    def _unanswered_turn(self, text: str, guess: IntentResult) -> int:
        """The flow never sees this input, so its turn (with the intent guess) is added here, before the
        escalation, whose handoff carries the caller's last words; its index, to store once answered."""
        index = len(self.ctx.turns)
        self.ctx.turns.append(
            Turn(index=index, channel="voice", text=text, intent=guess.intent, confidence=guess.confidence)
        )
        return index

    async def _act(self, actions: AsyncIterator[Action], timing: TurnTiming | None) -> None:
        turns_before = len(self.ctx.turns)
        replies: list[str] = []
        try:
            async for action in actions:
                if isinstance(action, Say):
                    first_frame = self._ledger.reply_requested(timing) if timing is not None and not replies else None
                    replies.append(action.text)
                    self._speech.say(action.text, prompt_id=action.prompt_id, on_first_frame=self._started(first_frame))
                elif isinstance(action, Listen):
                    self._listening.expect(action)
                elif isinstance(action, Escalate):
                    await self._escalate(
                        self.services.escalator.from_flow(self.ctx, action), replies, None if replies else timing
                    )
                    return
                elif isinstance(action, OfferCallback):
                    self.record("callback_offered", {"reason": action.reason})
                elif isinstance(action, Hangup):
                    await self._finish(action.reason)
                    return
                elif isinstance(action, SetFlag):
                    self.record("flag", {"name": action.name})
                elif isinstance(action, VerificationEvent):
                    # The audit trail of caller verification: outcome and method, never the secret.
                    self.record(
                        "verification",
                        {
                            "outcome": action.outcome,
                            "method": action.method,
                            "attempt": action.attempt,
                            "attempts_allowed": action.attempts_allowed,
                        },
                    )
        finally:
            self._ledger.store(self.ctx, turns_before, replies, timing)
            self._record_customer()

    def _record_customer(self) -> None:
        """The customer id goes on the call record once known, not only at a clean end: an erasure by
        customer id then finds the call even when the process dies mid-call."""
        customer = self.ctx.customer
        if customer is not None and customer.customer_id != self._customer_recorded:
            self._customer_recorded = customer.customer_id
            db = self.services.db
            db.submit(db.sync.update_call, self.ctx.call_sid, customer_id=customer.customer_id)

    async def _escalate(
        self, decision: EscalationDecision, said: list[str] | None = None, timing: TurnTiming | None = None
    ) -> None:
        """Hands the call to the desk; what the caller is told then (the hold line) goes into `said`, the reply
        of the turn that led here, and its first frame ends that turn's `timing` (None: already answered)."""
        if self.ctx.escalated:
            return
        self.ctx.escalated = True
        self.outcome = "escalated"
        self._said, self._said_timing = said, timing
        try:
            self._hold = await self.services.escalator.escalate(self, self.ctx, decision)
        finally:
            self._said, self._said_timing = None, None
        self._spawn(self._hold.run(self._clock), "hold-line")

    async def _finish(self, reason: str) -> None:
        """The flow ended the call: let the goodbye play out, then hang up."""
        ctx, callbacks = self.ctx, self.services.callbacks
        if ctx.flags.get("callback_requested") and callbacks is not None and ctx.caller:
            # The caller chose a callback over waiting (a backend was down): text the booking link now.
            self.outcome = "callback"
            try:
                customer_id = ctx.customer.customer_id if ctx.customer else None
                await callbacks.request(
                    ctx.call_sid, ctx.caller, customer_id, {"reason": str(ctx.flags["callback_requested"])}
                )
            except Exception as exc:  # noqa: BLE001 - the goodbye still plays; the failure is on record
                self.error("callback_sms_failed", f"{type(exc).__name__}: {exc}")
        await self._speech.finished()
        await self._hang_up(f"bot_hangup: {reason}")
