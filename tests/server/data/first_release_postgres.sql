-- The schema the first release (06aac00) created with create_all on PostgreSQL (pg_dump --schema-only).


SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE FUNCTION public.audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE public.audit_log (
    id integer NOT NULL,
    at timestamp with time zone NOT NULL,
    actor character varying(128) NOT NULL,
    action character varying(64) NOT NULL,
    subject character varying(128) NOT NULL,
    details json NOT NULL,
    prev_hash character varying(64),
    hash character varying(64)
);

CREATE SEQUENCE public.audit_log_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id;

CREATE TABLE public.call_events (
    id integer NOT NULL,
    call_sid character varying(64) NOT NULL,
    at timestamp with time zone NOT NULL,
    kind character varying(64) NOT NULL,
    data json NOT NULL
);

CREATE SEQUENCE public.call_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.call_events_id_seq OWNED BY public.call_events.id;

CREATE TABLE public.callbacks (
    id integer NOT NULL,
    call_sid character varying(64),
    customer_id character varying(64),
    phone character varying(32) NOT NULL,
    token character varying(64) NOT NULL,
    idempotency_key character varying(128) NOT NULL,
    status character varying(32) NOT NULL,
    attempts integer NOT NULL,
    message_sid character varying(64),
    error text,
    scheduled_for timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    payload json NOT NULL
);

CREATE SEQUENCE public.callbacks_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.callbacks_id_seq OWNED BY public.callbacks.id;

CREATE TABLE public.calls (
    call_sid character varying(64) NOT NULL,
    stream_sid character varying(64),
    caller character varying(64),
    customer_id character varying(64),
    region character varying(32),
    flow character varying(64),
    params json NOT NULL,
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    end_reason character varying(64),
    outcome character varying(32) NOT NULL,
    first_response_ms double precision
);

CREATE TABLE public.escalations (
    id integer NOT NULL,
    call_sid character varying(64) NOT NULL,
    at timestamp with time zone NOT NULL,
    trigger character varying(64) NOT NULL,
    reason text NOT NULL,
    queue character varying(64) NOT NULL,
    priority integer NOT NULL,
    status character varying(32) NOT NULL,
    agent character varying(128),
    payload json NOT NULL
);

CREATE SEQUENCE public.escalations_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.escalations_id_seq OWNED BY public.escalations.id;

CREATE TABLE public.exports (
    id integer NOT NULL,
    at timestamp with time zone NOT NULL,
    kind character varying(64) NOT NULL,
    path text NOT NULL,
    call_sids json NOT NULL
);

CREATE SEQUENCE public.exports_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.exports_id_seq OWNED BY public.exports.id;

CREATE TABLE public.turns (
    id integer NOT NULL,
    call_sid character varying(64) NOT NULL,
    idx integer NOT NULL,
    at timestamp with time zone NOT NULL,
    channel character varying(16) NOT NULL,
    text text NOT NULL,
    intent character varying(64),
    confidence double precision,
    sentiment double precision,
    loudness_spl_db double precision,
    reply text NOT NULL,
    latency json NOT NULL
);

CREATE SEQUENCE public.turns_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.turns_id_seq OWNED BY public.turns.id;

ALTER TABLE ONLY public.audit_log ALTER COLUMN id SET DEFAULT nextval('public.audit_log_id_seq'::regclass);

ALTER TABLE ONLY public.call_events ALTER COLUMN id SET DEFAULT nextval('public.call_events_id_seq'::regclass);

ALTER TABLE ONLY public.callbacks ALTER COLUMN id SET DEFAULT nextval('public.callbacks_id_seq'::regclass);

ALTER TABLE ONLY public.escalations ALTER COLUMN id SET DEFAULT nextval('public.escalations_id_seq'::regclass);

ALTER TABLE ONLY public.exports ALTER COLUMN id SET DEFAULT nextval('public.exports_id_seq'::regclass);

ALTER TABLE ONLY public.turns ALTER COLUMN id SET DEFAULT nextval('public.turns_id_seq'::regclass);

ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.call_events
    ADD CONSTRAINT call_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.callbacks
    ADD CONSTRAINT callbacks_idempotency_key_key UNIQUE (idempotency_key);

ALTER TABLE ONLY public.callbacks
    ADD CONSTRAINT callbacks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.callbacks
    ADD CONSTRAINT callbacks_token_key UNIQUE (token);

ALTER TABLE ONLY public.calls
    ADD CONSTRAINT calls_pkey PRIMARY KEY (call_sid);

ALTER TABLE ONLY public.escalations
    ADD CONSTRAINT escalations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.exports
    ADD CONSTRAINT exports_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.turns
    ADD CONSTRAINT turns_pkey PRIMARY KEY (id);

CREATE INDEX ix_call_events_call_sid ON public.call_events USING btree (call_sid);

CREATE INDEX ix_callbacks_call_sid ON public.callbacks USING btree (call_sid);

CREATE INDEX ix_callbacks_customer_id ON public.callbacks USING btree (customer_id);

CREATE INDEX ix_calls_customer_id ON public.calls USING btree (customer_id);

CREATE INDEX ix_escalations_call_sid ON public.escalations USING btree (call_sid);

CREATE INDEX ix_turns_call_sid ON public.turns USING btree (call_sid);

CREATE TRIGGER audit_log_append_only BEFORE DELETE OR UPDATE ON public.audit_log FOR EACH ROW EXECUTE FUNCTION public.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION public.audit_log_append_only();

ALTER TABLE ONLY public.call_events
    ADD CONSTRAINT call_events_call_sid_fkey FOREIGN KEY (call_sid) REFERENCES public.calls(call_sid) ON DELETE CASCADE;

ALTER TABLE ONLY public.callbacks
    ADD CONSTRAINT callbacks_call_sid_fkey FOREIGN KEY (call_sid) REFERENCES public.calls(call_sid) ON DELETE SET NULL;

ALTER TABLE ONLY public.escalations
    ADD CONSTRAINT escalations_call_sid_fkey FOREIGN KEY (call_sid) REFERENCES public.calls(call_sid) ON DELETE CASCADE;

ALTER TABLE ONLY public.turns
    ADD CONSTRAINT turns_call_sid_fkey FOREIGN KEY (call_sid) REFERENCES public.calls(call_sid) ON DELETE CASCADE;


