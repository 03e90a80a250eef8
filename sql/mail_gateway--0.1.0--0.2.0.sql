-- mail_gateway 0.1.0 → 0.2.0 (docs/OPERATIONS.md, "Upgrading"). Replace the library first (one
-- restart), then `ALTER EXTENSION mail_gateway UPDATE` in each database; until then its workers
-- wait. tests/tests/upgrade.rs checks that 0.1.0 plus this script is a fresh 0.2.0 install.

-- The script's own objects land in the extension's schema, as at CREATE EXTENSION.
SET LOCAL search_path TO mail_gateway, pg_catalog;

-- The gateway's own role (docs/SECURITY.md, "Roles"): the workers connect as it.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mail_gateway_worker') THEN
        CREATE ROLE mail_gateway_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
            NOBYPASSRLS;
    END IF;
END
$roles$;

-- Parameters: defaults in one place (core/src/parameters.rs).
CREATE FUNCTION "parameter_default"(
	"key" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'parameter_default_wrapper';
CREATE FUNCTION "parameter_defaults"() RETURNS TABLE (
	"key" TEXT,  /* String */
	"value" TEXT  /* Option < String > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'parameter_defaults_wrapper';
CREATE FUNCTION "parameter_kind"(
	"key" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'parameter_kind_wrapper';
CREATE FUNCTION "workers"() RETURNS TABLE (
	"database" TEXT,  /* Option < String > */
	"state" TEXT,  /* String */
	"since" timestamp with time zone,  /* Option < pgrx :: datum :: TimestampWithTimeZone > */
	"paused" bool,  /* bool */
	"senders" INT[],  /* Vec < i32 > */
	"fetcher" INT  /* Option < i32 > */
)
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'workers_wrapper';
CREATE FUNCTION "outbox_insert"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'outbox_insert_wrapper';

-- OAuth2 accounts (issue 14).
CREATE FUNCTION "oauth_account_validate"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'oauth_account_validate_wrapper';
CREATE FUNCTION "set_oauth"(
	"server" TEXT DEFAULT NULL, /* Option < & str > */
	"provider" TEXT DEFAULT NULL, /* Option < & str > */
	"client_id" TEXT DEFAULT NULL, /* Option < & str > */
	"client_secret" TEXT DEFAULT NULL, /* Option < & str > */
	"refresh_token" TEXT DEFAULT NULL, /* Option < & str > */
	"tenant" TEXT DEFAULT NULL, /* Option < & str > */
	"scope" TEXT DEFAULT NULL, /* Option < & str > */
	"token_endpoint" TEXT DEFAULT NULL, /* Option < & str > */
	"authorize_endpoint" TEXT DEFAULT NULL, /* Option < & str > */
	"account" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_oauth_wrapper';
CREATE FUNCTION "oauth_authorize_url"(
	"account" TEXT, /* & str */
	"redirect_uri" TEXT DEFAULT 'http://localhost', /* & str */
	"login_hint" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'oauth_authorize_url_wrapper';
CREATE FUNCTION "oauth_exchange_code"(
	"account" TEXT, /* & str */
	"code" TEXT, /* & str */
	"redirect_uri" TEXT DEFAULT 'http://localhost' /* & str */
) RETURNS TEXT /* String */
STRICT
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'oauth_exchange_code_wrapper';

COMMENT ON TABLE mail_gateway.parameter IS
    'System parameters of the mail gateway; change them with set_parameter(); a deleted row reads as its default';

-- Politeness towards a relay: connections at once, mails per connection (before the
-- validation triggers below, which read them).
ALTER TABLE mail_gateway.outgoing_server
    ADD COLUMN max_connections integer NOT NULL DEFAULT 20,
    ADD COLUMN max_mails_per_connection integer NOT NULL DEFAULT 1000,
    ADD CONSTRAINT outgoing_server_max_connections_check CHECK (max_connections BETWEEN 1 AND 100),
    ADD CONSTRAINT outgoing_server_max_mails_per_connection_check CHECK (max_mails_per_connection >= 1);
GRANT SELECT (max_connections, max_mails_per_connection) ON mail_gateway.outgoing_server
    TO mail_gateway_user;

CREATE OR REPLACE FUNCTION mail_gateway.parameter_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text := NEW.value;
BEGIN
    -- Restoring a pg_dump inserts the seeded keys again: make that an update.
    IF TG_OP = 'INSERT' AND EXISTS (SELECT FROM mail_gateway.parameter p WHERE p.key = NEW.key) THEN
        UPDATE mail_gateway.parameter p SET value = NEW.value WHERE p.key = NEW.key;
        RETURN NULL;
    END IF;
    IF v IS NULL THEN
        IF mail_gateway.parameter_default(NEW.key) IS NOT NULL THEN
            RAISE EXCEPTION 'parameter "%" cannot be NULL', NEW.key
                USING ERRCODE = 'not_null_violation',
                      HINT = format('Give it a value, or delete its row to use the default (%s).',
                                    mail_gateway.parameter_default(NEW.key));
        END IF;
        RETURN NEW;
    END IF;
    -- The kinds of values come with the defaults, from one list (core/src/parameters.rs).
    CASE mail_gateway.parameter_kind(NEW.key)
    WHEN 'domain' THEN
        NEW.value := mail_gateway.normalize_domain(v);
    WHEN 'local_part' THEN
        NEW.value := mail_gateway.normalize_local_part(v);
    WHEN 'sender' THEN
        NEW.value := CASE WHEN strpos(v, '@') > 0 THEN mail_gateway.normalize_email(v)
                          ELSE mail_gateway.normalize_local_part(v) END;
    WHEN 'from_filter' THEN
        NEW.value := nullif(mail_gateway.normalize_from_filter(v), '');
    WHEN 'count', 'percent' THEN
        IF btrim(v) !~ '^[0-9]{1,9}$'
           OR (mail_gateway.parameter_kind(NEW.key) = 'percent' AND btrim(v)::integer > 100) THEN
            RAISE EXCEPTION 'invalid value "%" for parameter "%"', v, NEW.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE mail_gateway.parameter_kind(NEW.key) WHEN 'percent'
                                 THEN 'Expected a percentage from 0 to 100.'
                                 ELSE 'Expected a whole number, 0 or more.' END;
        END IF;
        NEW.value := btrim(v)::integer::text;
    WHEN 'authserv_ids' THEN
        -- authserv-ids are host names: lower-case, comma-separated, no empty entries.
        NEW.value := nullif(array_to_string(ARRAY(
            SELECT DISTINCT lower(btrim(id)) FROM unnest(string_to_array(v, ',')) AS id
            WHERE btrim(id) <> '' ORDER BY 1), ','), '');
        IF NEW.value ~ '[^a-z0-9.\-_,]' THEN
            RAISE EXCEPTION 'invalid value "%" for parameter "%"', v, NEW.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Expected the authserv-ids of your own mail servers, comma-separated (the first word of their Authentication-Results headers, e.g. mx.mycompany.com).';
        END IF;
    WHEN 'interval' THEN
        BEGIN
            IF v::interval < interval '0' OR (NEW.key = 'mail.fetch.interval' AND v::interval < interval '1 second') THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value';
            END IF;
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'invalid value "%" for parameter "%"', v, NEW.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Expected a positive PostgreSQL interval such as ''7 days'' or ''5 minutes''.';
        END;
    WHEN 'server_name' THEN
        IF NOT EXISTS (SELECT FROM mail_gateway.outgoing_server s WHERE s.name = v) THEN
            RAISE EXCEPTION 'no outgoing server named "%"', v
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Create it in mail_gateway.outgoing_server first, or set the parameter to NULL.';
        END IF;
    ELSE
        NULL; -- keys the gateway does not read are stored as given
    END CASE;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION mail_gateway.server_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.name := btrim(NEW.name);
    NEW.host := btrim(NEW.host);
    IF NEW.encryption IS NULL OR NEW.encryption NOT IN ('none', 'starttls', 'ssl') THEN
        RAISE EXCEPTION 'unknown encryption "%" for server "%"', NEW.encryption, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Use none, starttls (usually port 587 or 143) or ssl (465, 993, 995).';
    END IF;
    IF NEW.port IS NOT NULL AND NOT NEW.port BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION 'port % of server "%" is out of range', NEW.port, NEW.name
            USING ERRCODE = 'check_violation', HINT = 'A TCP port is between 1 and 65535.';
    END IF;
    IF NEW.host ~ '[[:space:]/@]' THEN
        RAISE EXCEPTION 'host "%" of server "%" is not a host name', NEW.host, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Give a host name or IP address only, e.g. smtp.example.com, without scheme or port.';
    END IF;
    -- XOAUTH2 logs in as a mailbox: the providers refuse an empty user name, with an error
    -- that does not say so.
    IF (NEW.auth = 'xoauth2' OR NEW.auth IS NULL AND NEW.oauth_account IS NOT NULL)
       AND coalesce(btrim(NEW.username), '') = '' THEN
        RAISE EXCEPTION 'server "%" uses xoauth2 authentication but has no username', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Set username to the address of the mailbox the token is for, e.g. notifications@mycompany.com.';
    END IF;
    IF NEW.oauth_account IS NOT NULL AND NEW.auth IS DISTINCT FROM 'xoauth2'
       AND NOT (TG_TABLE_NAME = 'outgoing_server' AND NEW.auth IS NULL) THEN
        RAISE EXCEPTION 'server "%" names OAuth2 account "%" but uses % authentication', NEW.name,
                NEW.oauth_account, NEW.auth
            USING ERRCODE = 'check_violation',
                  HINT = 'Set auth = ''xoauth2'' (set_oauth does), or oauth_account = NULL.';
    END IF;
    -- Credentials never cross a network unencrypted unless the administrator says so: an
    -- outgoing server that logs in, and every incoming server (IMAP and POP3 always log in).
    -- The loopback is not a network (a local tunnel such as stunnel encrypts beyond it).
    IF NEW.encryption = 'none' AND NOT NEW.allow_plaintext_login
       AND (TG_TABLE_NAME = 'incoming_server' OR coalesce(NEW.auth, CASE WHEN NEW.username IS NULL THEN 'none' ELSE 'login' END) <> 'none')
       AND NOT (lower(NEW.host) IN ('localhost', '::1') OR NEW.host ~ '^127\.[0-9]+\.[0-9]+\.[0-9]+$') THEN
        RAISE EXCEPTION 'server "%" would send its credentials without encryption', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Use encryption starttls or ssl (or auth ''none'' for a relay that trusts this host); if the network between them is yours, set allow_plaintext_login = true.';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION mail_gateway.outgoing_server_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.port IS NULL THEN
        NEW.port := CASE NEW.encryption WHEN 'ssl' THEN 465 WHEN 'starttls' THEN 587 ELSE 25 END;
    END IF;
    IF NEW.auth IS NULL THEN
        NEW.auth := CASE WHEN NEW.oauth_account IS NOT NULL THEN 'xoauth2'
                         WHEN NEW.username IS NULL THEN 'none' ELSE 'login' END;
    END IF;
    IF NEW.auth NOT IN ('none', 'login', 'certificate', 'xoauth2') THEN
        RAISE EXCEPTION 'unknown authentication "%" for server "%"', NEW.auth, NEW.name
            USING ERRCODE = 'check_violation', HINT = 'Use none, login, certificate or xoauth2.';
    END IF;
    IF NEW.auth = 'login' AND (NEW.username IS NULL OR NEW.password IS NULL) THEN
        RAISE EXCEPTION 'server "%" uses login authentication but has no username or password', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Set username and password, or auth = ''none''.';
    END IF;
    IF NEW.auth = 'xoauth2' AND NEW.password IS NULL AND NEW.oauth_account IS NULL THEN
        RAISE EXCEPTION 'server "%" uses xoauth2 authentication but has no OAuth2 account or access token', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Set it up with SELECT mail_gateway.set_oauth(server => ''…'', provider => ''microsoft'', client_id => …, client_secret => …, refresh_token => …) (docs/OPERATIONS.md, "OAuth2"); or put a static access token in password.';
    END IF;
    IF NEW.auth = 'certificate' AND (NEW.client_cert IS NULL OR NEW.client_key IS NULL) THEN
        RAISE EXCEPTION 'server "%" uses certificate authentication but has no client_cert or client_key', NEW.name
            USING ERRCODE = 'check_violation', HINT = 'Set both, as PEM text.';
    END IF;
    IF NEW.max_connections NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'max_connections % of server "%" is out of range', NEW.max_connections, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'From 1 to 100 connections at once; 10 suits most relays, fewer for a provider that limits sessions.';
    END IF;
    IF NEW.max_mails_per_connection < 1 THEN
        RAISE EXCEPTION 'max_mails_per_connection % of server "%" is out of range', NEW.max_mails_per_connection, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'At least 1: the mails sent over one connection before it is opened again (some providers allow 20).';
    END IF;
    NEW.from_filter := nullif(mail_gateway.normalize_from_filter(NEW.from_filter), '');
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION mail_gateway.incoming_server_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.protocol IS NULL OR NEW.protocol NOT IN ('imap', 'pop3') THEN
        RAISE EXCEPTION 'unknown protocol "%" for server "%"', NEW.protocol, NEW.name
            USING ERRCODE = 'check_violation', HINT = 'Use imap or pop3.';
    END IF;
    IF NEW.port IS NULL THEN
        NEW.port := CASE NEW.protocol
            WHEN 'imap' THEN CASE NEW.encryption WHEN 'ssl' THEN 993 ELSE 143 END
            ELSE CASE NEW.encryption WHEN 'ssl' THEN 995 ELSE 110 END END;
    END IF;
    IF NEW.state NOT IN ('draft', 'confirmed') THEN
        RAISE EXCEPTION 'unknown state "%" for server "%"', NEW.state, NEW.name
            USING ERRCODE = 'check_violation', HINT = 'Use draft; test_incoming_server() confirms it.';
    END IF;
    -- A changed connection must be tested again before it is fetched ("TEST & CONFIRM").
    IF TG_OP = 'UPDATE' AND (NEW.protocol, NEW.host, NEW.port, NEW.encryption, NEW.auth, NEW.username,
            NEW.password, NEW.verify_tls, NEW.ca_cert, NEW.mailbox, NEW.oauth_account)
            IS DISTINCT FROM (OLD.protocol, OLD.host, OLD.port, OLD.encryption, OLD.auth, OLD.username,
            OLD.password, OLD.verify_tls, OLD.ca_cert, OLD.mailbox, OLD.oauth_account) THEN
        NEW.state := 'draft';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION mail_gateway.alias_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    reserved text[] := ARRAY['catchall', 'bounce',
        mail_gateway.parameter_value('mail.catchall.alias'),
        mail_gateway.parameter_value('mail.bounce.alias')];
    model_table text;
BEGIN
    NEW.name := mail_gateway.normalize_local_part(NEW.name);
    IF NEW.domain IS NOT NULL THEN
        NEW.domain := mail_gateway.normalize_domain(NEW.domain);
    END IF;
    IF NEW.name = ANY (reserved) THEN
        RAISE EXCEPTION 'alias name "%" is reserved', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'The catchall and bounce aliases collect replies and bounces; choose another name.';
    END IF;
    IF NEW.contact_policy NOT IN ('everyone', 'partners', 'followers') THEN
        RAISE EXCEPTION 'unknown contact_policy "%" for alias "%"', NEW.contact_policy, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Use everyone, partners (known contacts) or followers (of force_thread_id''s record).';
    END IF;
    IF jsonb_typeof(NEW.defaults) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'defaults of alias "%" must be a JSON object', NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'Give column values by name, such as ''{"team": "sales"}''.';
    END IF;
    -- Stored schema-qualified, so the worker and a pg_dump restore (which runs with an empty
    -- search_path) find the same table.
    SELECT format('%I.%I', n.nspname, c.relname) INTO model_table
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass(NEW.model);
    NEW.model := coalesce(model_table, NEW.model);
    IF NEW.handler IS NULL AND model_table IS NULL THEN
        RAISE EXCEPTION 'alias "%" has no handler and table "%" does not exist', NEW.name, NEW.model
            USING ERRCODE = 'undefined_table',
                  HINT = 'Name an existing table in model, or give a handler function (message jsonb) returns bigint.';
    END IF;
    IF NEW.handler IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_proc p WHERE p.oid = NEW.handler
          AND p.prorettype = 'bigint'::regtype AND p.pronargs = 1
          AND p.proargtypes[0] = 'jsonb'::regtype) THEN
        RAISE EXCEPTION 'handler % of alias "%" has the wrong signature', NEW.handler, NEW.name
            USING ERRCODE = 'invalid_function_definition',
                  HINT = 'A handler takes (message jsonb) and returns bigint, the id of the record it made.';
    END IF;
    -- The owner: whose rights the handler runs with. Who creates or changes an alias owns it;
    -- another owner may be named only by a member of that role (so a pg_dump restore, run by a
    -- superuser, keeps the owners it dumped).
    IF TG_OP = 'UPDATE' AND NEW.owner = OLD.owner
       AND (NEW.model, NEW.handler, NEW.defaults) IS DISTINCT FROM (OLD.model, OLD.handler, OLD.defaults) THEN
        NEW.owner := current_user;
    END IF;
    NEW.owner := coalesce(NEW.owner, current_user);
    IF NOT pg_catalog.pg_has_role(current_user, NEW.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'alias "%" cannot be owned by "%"', NEW.name, NEW.owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An alias is owned by the role that creates or changes it, or by a role it is a member of.';
    END IF;
    IF NEW.handler IS NOT NULL
       AND NOT pg_catalog.has_function_privilege(NEW.owner, NEW.handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'role "%" may not execute handler % of alias "%"', NEW.owner, NEW.handler, NEW.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The handler runs with the rights of the alias''s owner: grant it EXECUTE on the function.';
    END IF;
    IF NEW.handler IS NULL
       AND NOT pg_catalog.has_table_privilege(NEW.owner, model_table::pg_catalog.regclass, 'INSERT') THEN
        RAISE EXCEPTION 'role "%" may not insert into % (alias "%")', NEW.owner, model_table, NEW.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Grant the alias''s owner INSERT on the table, or give the alias a handler.';
    END IF;
    RETURN NEW;
END
$$;


-- OAuth2 accounts (issue 14): an application registered with Microsoft, Google or another
-- provider, and the refresh token a person's consent gave it. Servers with auth 'xoauth2' that
-- name one log in with an access token the workers obtain and renew (src/access_token.rs); several
-- servers may share one. Secrets: client_secret, refresh_token, access_token. The validation
-- trigger (oauth_account_validate, in Rust) fills the big providers' endpoints and scopes.
CREATE TABLE mail_gateway.oauth_account (
    id                 bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name               text NOT NULL,
    provider           text NOT NULL,  -- microsoft, google or custom
    tenant             text,           -- microsoft only: organizations (default), common, or the tenant
    token_endpoint     text NOT NULL,  -- filled for microsoft and google
    authorize_endpoint text,           -- where a person consents (oauth_authorize_url)
    client_id          text NOT NULL,
    client_secret      text,           -- secret
    refresh_token      text,           -- secret; replaced at once when the provider rotates it
    scope              text,           -- filled for microsoft and google
    ca_cert            text,           -- PEM of a CA for a custom endpoint
    access_token       text,           -- secret: the cached token
    expires_at         timestamptz,    -- of access_token
    last_refresh_at    timestamptz,    -- when access_token was obtained
    -- ok; needs_consent (no refresh token, or the provider refused it: invalid_grant);
    -- misconfigured (the provider refused the application's settings). Only set_oauth, or a
    -- change of the settings, makes the workers try again.
    state              text NOT NULL,
    last_error         text,
    last_error_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT oauth_account_name_key UNIQUE (name),
    CONSTRAINT oauth_account_name_check CHECK (btrim(name) <> ''),
    CONSTRAINT oauth_account_provider_check CHECK (provider IN ('microsoft', 'google', 'custom')),
    CONSTRAINT oauth_account_state_check CHECK (state IN ('ok', 'needs_consent', 'misconfigured'))
);
COMMENT ON TABLE mail_gateway.oauth_account IS
    'OAuth2 applications and refresh tokens for xoauth2 logins; set them up with set_oauth()';

CREATE TRIGGER oauth_account_validate BEFORE INSERT OR UPDATE ON mail_gateway.oauth_account
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.oauth_account_validate();
ALTER TABLE mail_gateway.outgoing_server
    ADD COLUMN oauth_account text,
    ADD CONSTRAINT outgoing_server_oauth_account_fkey FOREIGN KEY (oauth_account)
        REFERENCES mail_gateway.oauth_account (name) ON UPDATE CASCADE;
ALTER TABLE mail_gateway.incoming_server
    ADD COLUMN oauth_account text,
    ADD CONSTRAINT incoming_server_oauth_account_fkey FOREIGN KEY (oauth_account)
        REFERENCES mail_gateway.oauth_account (name) ON UPDATE CASCADE;
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.oauth_account', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.oauth_account_id_seq', '');

-- The new parameters, with their defaults (a row an administrator deleted stays deleted: it
-- reads as its default).
INSERT INTO mail_gateway.parameter (key, value)
SELECT d.key, d.value FROM mail_gateway.parameter_defaults() AS d
WHERE d.key IN ('mail.relay.limit.thread', 'mail.relay.limit.sender', 'mail.auto_reply.limit.recipient',
                'mail.auto_reply.daily_share', 'mail.authentication.trusted_servers')
ON CONFLICT (key) DO NOTHING;

CREATE FUNCTION mail_gateway.parameter_value(key text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT p.value FROM mail_gateway.parameter p WHERE p.key = $1),
                    mail_gateway.parameter_default($1))
$$;
COMMENT ON FUNCTION mail_gateway.parameter_value(text) IS
    'A system parameter as the gateway reads it: its value, or its default when the row is missing';

-- Servers: credentials in clear only when the administrator says so. A server that already
-- logs in without encryption keeps working: the upgrade says so for it, with a NOTICE.
ALTER TABLE mail_gateway.outgoing_server ADD COLUMN allow_plaintext_login boolean NOT NULL DEFAULT false;
ALTER TABLE mail_gateway.incoming_server ADD COLUMN allow_plaintext_login boolean NOT NULL DEFAULT false;
DO $plaintext$
DECLARE
    s record;
BEGIN
    FOR s IN
        SELECT 'outgoing_server' AS t, name FROM mail_gateway.outgoing_server
        WHERE encryption = 'none' AND auth <> 'none'
          AND NOT (lower(host) IN ('localhost', '::1') OR host ~ '^127\.[0-9]+\.[0-9]+\.[0-9]+$')
        UNION ALL
        SELECT 'incoming_server', name FROM mail_gateway.incoming_server
        WHERE encryption = 'none'
          AND NOT (lower(host) IN ('localhost', '::1') OR host ~ '^127\.[0-9]+\.[0-9]+\.[0-9]+$')
    LOOP
        EXECUTE format('UPDATE mail_gateway.%I SET allow_plaintext_login = true WHERE name = $1', s.t)
            USING s.name;
        RAISE NOTICE 'server "%" logs in without encryption: allow_plaintext_login set to keep it working; consider starttls or ssl', s.name;
    END LOOP;
END
$plaintext$;

-- Aliases: whose rights the handler runs with. Existing aliases are owned by whoever runs the
-- upgrade (as before, when the worker ran them as the bootstrap superuser): give them their
-- real owners (docs/OPERATIONS.md, "Upgrading").
ALTER TABLE mail_gateway.alias ADD COLUMN owner name NOT NULL DEFAULT current_user;
DROP FUNCTION mail_gateway.alias_default_insert(regclass, jsonb);
DROP FUNCTION mail_gateway.alias_call_handler(regprocedure, jsonb);

-- Bounces count only when they are ours (docs/SECURITY.md). 0.1.0 counted every bounce; those
-- tied to a mail of ours stay counted.
ALTER TABLE mail_gateway.contact ADD COLUMN bounces_reset_at timestamptz;
ALTER TABLE mail_gateway.bounce ADD COLUMN trusted boolean NOT NULL DEFAULT false;
UPDATE mail_gateway.bounce SET trusted = true WHERE mail_id IS NOT NULL;

-- Resetting a contact's bounce counter (normal mail from it, or an administrator's UPDATE)
-- resets what the blocklist rule counts: bounces after bounces_reset_at.
CREATE FUNCTION mail_gateway.contact_bounces_reset() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.bounce_count = 0 AND OLD.bounce_count <> 0 THEN
        NEW.bounces_reset_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER contact_bounces_reset BEFORE UPDATE OF bounce_count ON mail_gateway.contact
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.contact_bounces_reset();


-- Received mail: who wrote it, and what relaying it cost.
ALTER TABLE mail_gateway.inbound
    ADD COLUMN auth_verdict text NOT NULL DEFAULT 'none',
    ADD COLUMN auth_detail  text,
    ADD CONSTRAINT inbound_auth_verdict_check CHECK (auth_verdict IN ('pass', 'fail', 'none')),
    ADD COLUMN relayed integer NOT NULL DEFAULT 0;
CREATE INDEX inbound_relayed_thread_idx ON mail_gateway.inbound (model, res_id, received_at)
    WHERE relayed > 0;
CREATE INDEX inbound_relayed_sender_idx ON mail_gateway.inbound (email_from, received_at)
    WHERE relayed > 0;

-- The queue: the ERP's own mail claimed first; automatic answers counted.
ALTER TABLE mail_gateway.mail ADD COLUMN priority smallint NOT NULL DEFAULT 0;
UPDATE mail_gateway.mail SET priority = 2 WHERE kind = 'auto_reply' AND state IN ('outgoing', 'sending');
CREATE INDEX mail_auto_reply_idx ON mail_gateway.mail (created_at) WHERE kind = 'auto_reply';
-- In the claim order (store::claim::CLAIM_ORDER).
DROP INDEX mail_gateway.mail_due_idx;
CREATE INDEX mail_due_idx ON mail_gateway.mail (priority, next_attempt_at, id) WHERE state = 'outgoing';


-- Bodies compress with lz4 where the server has it (PostgreSQL's packages do): several times
-- faster than the default pglz both ways, which send_mail pays once per mail and the sender
-- once per claim. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE mail_gateway.mail ALTER COLUMN body_text SET COMPRESSION lz4,
        ALTER COLUMN body_html SET COMPRESSION lz4, ALTER COLUMN attachments SET COMPRESSION lz4;
    ALTER TABLE mail_gateway.message ALTER COLUMN body_text SET COMPRESSION lz4,
        ALTER COLUMN body_html SET COMPRESSION lz4, ALTER COLUMN attachments SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END $$;

-- Mass mailing at volume through the one way into the queue.
CREATE VIEW mail_gateway.outbox AS
SELECT id, email_from, email_to, cc, bcc, reply_to, subject, body_text, body_html, headers,
       attachments, scheduled_at, kind, model, res_id
FROM mail_gateway.mail WHERE false;
COMMENT ON VIEW mail_gateway.outbox IS
    'Insert here to queue many mails in one statement (each row goes through send_mail)';
CREATE TRIGGER outbox_insert INSTEAD OF INSERT ON mail_gateway.outbox
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.outbox_insert();

-- Views that read parameters read their defaults too.
CREATE OR REPLACE VIEW mail_gateway.incoming_status AS

SELECT s.name, s.protocol, s.host, s.port, s.mailbox, s.state, s.active,
       coalesce(s.fetch_interval,
                mail_gateway.parameter_value('mail.fetch.interval')::interval) AS fetch_interval,
       s.last_fetch_at, s.last_success_at, s.last_error_at, s.last_error,
       count(i.id) AS fetched,
       count(i.id) FILTER (WHERE i.received_at >= now() - interval '1 day') AS fetched_last_day,
       count(i.id) FILTER (WHERE i.state = 'new') AS waiting,
       count(i.id) FILTER (WHERE i.state = 'error') AS errors
FROM mail_gateway.incoming_server s
LEFT JOIN mail_gateway.inbound i ON i.server_id = s.id
GROUP BY s.id;


CREATE VIEW mail_gateway.worker_status AS SELECT * FROM mail_gateway.workers();
COMMENT ON VIEW mail_gateway.worker_status IS
    'Per database: serving, starting, no extension or no worker slot, and the workers'' pids';

-- Table comments no longer cite a document outside the repository.
COMMENT ON TABLE mail_gateway.alias IS
    'Email aliases such as sales@: mail to them creates a record in `model`';
COMMENT ON TABLE mail_gateway.message IS
    'Chatter messages of business records: posted (post_message) or received by email';
COMMENT ON TABLE mail_gateway.follower IS
    'Who is notified of a record''s messages: follow(), unfollow()';
COMMENT ON TABLE mail_gateway.bounce IS
    'One row per failed recipient of a received bounce';
COMMENT ON TABLE mail_gateway.inbound IS
    'Received mail, raw and summarised; process_message() and the fetcher store here';
COMMENT ON TABLE mail_gateway.mail IS
    'Outgoing mail queue: send_mail() adds, the worker sends';

-- Privileges (as finalize.sql grants them at CREATE EXTENSION).
REVOKE ALL ON mail_gateway.outbox, mail_gateway.worker_status FROM PUBLIC;
REVOKE ALL ON FUNCTION mail_gateway.parameter_default(text), mail_gateway.parameter_defaults(),
    mail_gateway.parameter_kind(text), mail_gateway.parameter_value(text), mail_gateway.workers(),
    mail_gateway.outbox_insert(), mail_gateway.contact_bounces_reset() FROM PUBLIC;
GRANT USAGE ON SCHEMA mail_gateway TO mail_gateway_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON mail_gateway.outbox, mail_gateway.worker_status
    TO mail_gateway_admin;
GRANT EXECUTE ON FUNCTION mail_gateway.parameter_default(text), mail_gateway.parameter_defaults(),
    mail_gateway.parameter_kind(text), mail_gateway.parameter_value(text), mail_gateway.workers(),
    mail_gateway.outbox_insert(), mail_gateway.contact_bounces_reset() TO mail_gateway_admin;
REVOKE INSERT, UPDATE ON mail_gateway.mail, mail_gateway.message FROM mail_gateway_admin;

GRANT SELECT ON ALL TABLES IN SCHEMA mail_gateway TO mail_gateway_worker;
GRANT INSERT, UPDATE ON mail_gateway.mail, mail_gateway.inbound, mail_gateway.follower,
    mail_gateway.contact TO mail_gateway_worker;
GRANT INSERT ON mail_gateway.message, mail_gateway.bounce, mail_gateway.blacklist
    TO mail_gateway_worker;
GRANT UPDATE (last_success_at, last_error_at, last_error) ON mail_gateway.outgoing_server
    TO mail_gateway_worker;
GRANT UPDATE (last_fetch_at, last_success_at, last_error_at, last_error, fetch_cursor)
    ON mail_gateway.incoming_server TO mail_gateway_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA mail_gateway TO mail_gateway_worker;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA mail_gateway TO mail_gateway_worker;

REVOKE INSERT ON mail_gateway.mail, mail_gateway.message FROM mail_gateway_user;
REVOKE USAGE ON SEQUENCE mail_gateway.mail_id_seq, mail_gateway.message_id_seq FROM mail_gateway_user;
GRANT SELECT, INSERT ON mail_gateway.outbox TO mail_gateway_user;
GRANT SELECT ON mail_gateway.worker_status TO mail_gateway_user;
GRANT EXECUTE ON FUNCTION mail_gateway.parameter_value(text), mail_gateway.parameter_default(text),
    mail_gateway.parameter_kind(text), mail_gateway.workers() TO mail_gateway_user;

-- OAuth2 accounts: administrators manage them, the gateway stores tokens, users see no secret.
REVOKE ALL ON FUNCTION mail_gateway.oauth_account_validate(),
    mail_gateway.set_oauth(text, text, text, text, text, text, text, text, text, text),
    mail_gateway.oauth_authorize_url(text, text, text), mail_gateway.oauth_exchange_code(text, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mail_gateway.oauth_account_validate(),
    mail_gateway.set_oauth(text, text, text, text, text, text, text, text, text, text),
    mail_gateway.oauth_authorize_url(text, text, text), mail_gateway.oauth_exchange_code(text, text, text)
    TO mail_gateway_admin, mail_gateway_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON mail_gateway.oauth_account TO mail_gateway_admin;
GRANT USAGE, SELECT ON SEQUENCE mail_gateway.oauth_account_id_seq TO mail_gateway_admin;
GRANT SELECT ON mail_gateway.oauth_account TO mail_gateway_worker;
GRANT USAGE ON SEQUENCE mail_gateway.oauth_account_id_seq TO mail_gateway_worker;
GRANT UPDATE (access_token, expires_at, last_refresh_at, refresh_token, state, last_error,
              last_error_at)
    ON mail_gateway.oauth_account TO mail_gateway_worker;
GRANT SELECT (oauth_account) ON mail_gateway.outgoing_server, mail_gateway.incoming_server
    TO mail_gateway_user;
GRANT SELECT (id, name, provider, tenant, token_endpoint, authorize_endpoint, client_id, scope,
              ca_cert, expires_at, last_refresh_at, state, last_error, last_error_at, created_at)
    ON mail_gateway.oauth_account TO mail_gateway_user;
