"""Text normalisation for Piper: what the caller hears for money, dates, times, phone numbers and ids."""

from __future__ import annotations

import pytest

from models.speech_text import MAX_SENTENCE_CHARS, LeadIns, normalize_for_speech, split_sentences

CASES = [
    # money
    ("$12.50", "12 dollars and 50 cents"),
    ("$1", "1 dollar"),
    ("$0.99", "99 cents"),
    ("$0.01", "1 cent"),
    ("$1,200", "1,200 dollars"),
    ("It costs $12.5.", "It costs 12 dollars and 50 cents."),
    ("$2.5 million", "2.5 million dollars"),
    ("a refund of -$5", "a refund of minus 5 dollars"),
    ("£3.20", "3 pounds and 20 pence"),
    ("€1.05", "1 euro and 5 cents"),
    # dates
    ("2026-11-24", "November 24th, 2026"),
    ("Due 11/24/2026.", "Due November 24th, 2026."),
    ("on 1/2/26", "on January 2nd, 2026"),
    ("2026-03-01", "March 1st, 2026"),
    ("2026-03-13", "March 13th, 2026"),
    ("2026-02-30", "2026-02-30"),  # no such day: left alone rather than read as a wrong date
    # times
    ("3:30 pm", "3 30 PM"),
    ("3:30 p.m.", "3 30 PM."),
    ("3:30PM", "3 30 PM"),
    ("3:00 PM", "3 PM"),
    ("3:05pm", "3 oh 5 PM"),
    ("15:30", "3 30 PM"),
    ("09:05", "9 oh 5 AM"),
    ("00:15", "12 15 AM"),
    ("3:30", "3 30"),
    ("3pm", "3 PM"),
    ("open at 9 a.m. tomorrow", "open at 9 AM tomorrow"),
    # phone numbers
    ("+1 415 555 0100", "plus 1, 4 1 5, 5 5 5, 0 1 0 0"),
    ("call +14155550100 now", "call plus 1, 4 1 5, 5 5 5, 0 1 0 0 now"),
    ("+44 20 7946 0958", "plus 4 4, 2 0, 7 9 4 6, 0 9 5 8"),
    ("(415) 555-0100", "4 1 5, 5 5 5, 0 1 0 0"),
    ("415.555.0100", "4 1 5, 5 5 5, 0 1 0 0"),
    ("1-800-555-0100", "1, 8 0 0, 5 5 5, 0 1 0 0"),
    ("4155550100", "4 1 5, 5 5 5, 0 1 0 0"),
    # order ids and other identifiers
    ("order A-10234", "order A, 1 0 2 3 4"),
    ("order #10234", "order number 1 0 2 3 4"),
    ("#10234", "number 1 0 2 3 4"),
    ("Your order number is 10234.", "Your order number is 1 0 2 3 4."),
    ("ORD-5521 shipped", "O R D, 5 5 2 1 shipped"),
    ("tracking 1Z999AA1", "tracking 1, Z, 9 9 9, A A, 1"),
    ("card ending in 4321", "card ending in 4 3 2 1"),
    ("confirmation code: 884213", "confirmation code: 8 8 4 2 1 3"),
    # quantities stay numbers
    ("3 items", "3 items"),
    ("250 points", "250 points"),
    ("order 10234 has 3 items", "order 1 0 2 3 4 has 3 items"),
    ("since 2026", "since 2026"),
    ("the 500GB plan", "the 500GB plan"),
    ("the 24th", "the 24th"),
    ("version 2.5", "version 2.5"),
    ("1,234 widgets", "1,234 widgets"),
    # symbols and addresses
    ("50% off & free", "50 percent off and free"),
    ("help@shop.com", "help at shop dot com"),
    ("  spaced\n out  ", "spaced out"),
]


@pytest.mark.parametrize(("raw", "spoken"), CASES)
def test_normalize_for_speech(raw: str, spoken: str) -> None:
    assert normalize_for_speech(raw) == spoken


@pytest.mark.parametrize(("raw", "spoken"), CASES)
def test_normalizing_twice_changes_nothing(raw: str, spoken: str) -> None:
    # The service normalises a reply, then each sentence again on its way to Piper.
    assert normalize_for_speech(spoken) == spoken


def test_normalize_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        normalize_for_speech(12.5)  # type: ignore[arg-type]


SPLITS = [
    ("Hello there. How can I help?", ["Hello there.", "How can I help?"]),
    ("Great! Your refund is 12.50 dollars.", ["Great!", "Your refund is 12.50 dollars."]),
    ("Dr. Smith will call. Bye.", ["Dr. Smith will call.", "Bye."]),
    ("We open at 9 a.m. tomorrow. Bye.", ["We open at 9 a.m. tomorrow.", "Bye."]),
    ("Say yes or no. Then wait.", ["Say yes or no.", "Then wait."]),
    ('He said "yes." Then left.', ['He said "yes."', "Then left."]),
    ("Case no. 5 5 2 1 is open.", ["Case no. 5 5 2 1 is open."]),
    ("First line\nSecond line", ["First line", "Second line"]),
    ("One... Two", ["One...", "Two"]),
    ("   ", []),
]


@pytest.mark.parametrize(("text", "sentences"), SPLITS)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_long_sentence_is_cut_at_a_comma_and_loses_nothing() -> None:
    clauses = [f"clause number {i} has a few words in it" for i in range(12)]
    text = ", ".join(clauses) + "."
    pieces = split_sentences(text)
    assert len(pieces) > 1
    assert all(len(p) <= MAX_SENTENCE_CHARS for p in pieces)
    assert all(p.endswith((",", ".")) for p in pieces)  # cut at punctuation, not mid-clause
    assert " ".join(pieces) == text


LEAD_INS = [
    # a template's words before its first placeholder -> what is rendered ahead of calls
    ("Thanks, I have noted that you said ", ["Thanks, I have noted that you said,"]),
    ("Your available balance is ", ["Your available balance is,"]),
    # the pause falls before "of", not after it
    ("If you're calling about your delivery of ", ["If you're calling about your delivery,"]),
    # a few words before the placeholder are said with it, from the last comma or colon
    ("Sorry, just to be sure: is it about ", ["Sorry, just to be sure:"]),
    ("Good to hear from you again, ", ["Good to hear from you again,"]),
    # whole sentences are fixed prompts
    ("Done. You've topped up ", ["Done.", "You've topped up,"]),
    ("I'm sorry about the trouble. Your ", ["I'm sorry about the trouble."]),
    ("Thanks for waiting. ", ["Thanks for waiting."]),
    # too short to say apart, or read differently once filled ("#{id}" is "number 1 0 2")
    ("I heard ", []),
    ("Your order of ", []),
    ("Your order #", []),
]


@pytest.mark.parametrize(("start", "prompts"), LEAD_INS)
def test_lead_ins_of_template_starts(start: str, prompts: list[str]) -> None:
    assert LeadIns().add(start) == prompts


def test_a_sentence_is_cut_after_the_longest_lead_in_it_begins_with_and_only_with_words_after_it() -> None:
    lead_ins = LeadIns()
    lead_ins.add("Your payment is ")
    lead_ins.add("Your payment is late, and your next payment date is ")
    assert lead_ins.split("Your payment is 12 dollars.") == ["Your payment is,", "12 dollars."]
    assert lead_ins.split("Your payment is late, and your next payment date is December 1st.") == [
        "Your payment is late, and your next payment date is,",
        "December 1st.",
    ]
    assert lead_ins.split("Your payment is .") is None  # the placeholder was empty: nothing to say after it
    assert lead_ins.split("Your payments are due.") is None  # "Your payment" is not a whole word here
    assert lead_ins.is_lead_in("Your payment is,") and not lead_ins.is_lead_in("Your payment is")
