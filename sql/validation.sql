-- Validation triggers: bad configuration is refused where it is written, with a message that
-- names the value and a hint that says what is expected. They apply to set_parameter() and to
-- plain INSERT/UPDATE alike. Syntax checks of addresses and domains are Rust functions
-- (normalize_*), shared with the worker.

CREATE FUNCTION mail_gateway.parameter_validate() RETURNS trigger
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

CREATE TRIGGER parameter_validate BEFORE INSERT OR UPDATE ON mail_gateway.parameter
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.parameter_validate();

-- Shared by both server tables: the fields whose wrong values are the most common mistakes.
CREATE FUNCTION mail_gateway.server_validate() RETURNS trigger
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

CREATE FUNCTION mail_gateway.outgoing_server_validate() RETURNS trigger
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

CREATE TRIGGER outgoing_server_validate_1 BEFORE INSERT OR UPDATE ON mail_gateway.outgoing_server
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.server_validate();
CREATE TRIGGER outgoing_server_validate_2 BEFORE INSERT OR UPDATE ON mail_gateway.outgoing_server
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.outgoing_server_validate();

CREATE FUNCTION mail_gateway.incoming_server_validate() RETURNS trigger
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

CREATE TRIGGER incoming_server_validate_1 BEFORE INSERT OR UPDATE ON mail_gateway.incoming_server
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.server_validate();
CREATE TRIGGER incoming_server_validate_2 BEFORE INSERT OR UPDATE ON mail_gateway.incoming_server
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.incoming_server_validate();

-- No fixed search_path here: `model` names a table as the caller's search_path finds it.
CREATE FUNCTION mail_gateway.alias_validate() RETURNS trigger
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

CREATE TRIGGER alias_validate BEFORE INSERT OR UPDATE ON mail_gateway.alias
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.alias_validate();

CREATE FUNCTION mail_gateway.email_normalize() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.email := mail_gateway.normalize_email(NEW.email);
    RETURN NEW;
END
$$;

CREATE TRIGGER contact_email_normalize BEFORE INSERT OR UPDATE OF email ON mail_gateway.contact
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.email_normalize();
CREATE TRIGGER blacklist_email_normalize BEFORE INSERT OR UPDATE OF email ON mail_gateway.blacklist
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.email_normalize();

-- OAuth2 accounts: checked and completed in Rust (api/oauth.rs), with the providers' endpoints
-- and scopes from one place (core/src/oauth).
CREATE TRIGGER oauth_account_validate BEFORE INSERT OR UPDATE ON mail_gateway.oauth_account
    FOR EACH ROW EXECUTE FUNCTION mail_gateway.oauth_account_validate();
