-- The schema the first release (06aac00) created with create_all on SQLite.
CREATE TABLE calls (
	call_sid VARCHAR(64) NOT NULL, 
	stream_sid VARCHAR(64), 
	caller VARCHAR(64), 
	customer_id VARCHAR(64), 
	region VARCHAR(32), 
	flow VARCHAR(64), 
	params JSON NOT NULL, 
	started_at DATETIME NOT NULL, 
	ended_at DATETIME, 
	end_reason VARCHAR(64), 
	outcome VARCHAR(32) NOT NULL, 
	first_response_ms FLOAT, 
	PRIMARY KEY (call_sid)
);
CREATE INDEX ix_calls_customer_id ON calls (customer_id);
CREATE TABLE audit_log (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	subject VARCHAR(128) NOT NULL, 
	details JSON NOT NULL, 
	prev_hash VARCHAR(64), 
	hash VARCHAR(64), 
	PRIMARY KEY (id)
);
CREATE TABLE exports (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	call_sids JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE call_events (
	id INTEGER NOT NULL, 
	call_sid VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	data JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_sid) REFERENCES calls (call_sid) ON DELETE CASCADE
);
CREATE INDEX ix_call_events_call_sid ON call_events (call_sid);
CREATE TABLE turns (
	id INTEGER NOT NULL, 
	call_sid VARCHAR(64) NOT NULL, 
	idx INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	channel VARCHAR(16) NOT NULL, 
	text TEXT NOT NULL, 
	intent VARCHAR(64), 
	confidence FLOAT, 
	sentiment FLOAT, 
	loudness_spl_db FLOAT, 
	reply TEXT NOT NULL, 
	latency JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_sid) REFERENCES calls (call_sid) ON DELETE CASCADE
);
CREATE INDEX ix_turns_call_sid ON turns (call_sid);
CREATE TABLE escalations (
	id INTEGER NOT NULL, 
	call_sid VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	"trigger" VARCHAR(64) NOT NULL, 
	reason TEXT NOT NULL, 
	queue VARCHAR(64) NOT NULL, 
	priority INTEGER NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	agent VARCHAR(128), 
	payload JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_sid) REFERENCES calls (call_sid) ON DELETE CASCADE
);
CREATE INDEX ix_escalations_call_sid ON escalations (call_sid);
CREATE TABLE callbacks (
	id INTEGER NOT NULL, 
	call_sid VARCHAR(64), 
	customer_id VARCHAR(64), 
	phone VARCHAR(32) NOT NULL, 
	token VARCHAR(64) NOT NULL, 
	idempotency_key VARCHAR(128) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	attempts INTEGER NOT NULL, 
	message_sid VARCHAR(64), 
	error TEXT, 
	scheduled_for DATETIME, 
	created_at DATETIME NOT NULL, 
	payload JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_sid) REFERENCES calls (call_sid) ON DELETE SET NULL, 
	UNIQUE (token), 
	UNIQUE (idempotency_key)
);
CREATE INDEX ix_callbacks_call_sid ON callbacks (call_sid);
CREATE INDEX ix_callbacks_customer_id ON callbacks (customer_id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
