-- Runs last in the install script: the workers' view, privileges and pg_dump registration.

-- What the workers of every database are doing (docs/OPERATIONS.md, "Workers").
CREATE VIEW mail_gateway.worker_status AS SELECT * FROM mail_gateway.workers();
COMMENT ON VIEW mail_gateway.worker_status IS
    'Per database: serving, starting, no extension or no worker slot, and the workers'' pids';

-- Nothing is PUBLIC: the three roles get exactly what they need (docs/SECURITY.md, "Roles").
REVOKE ALL ON SCHEMA mail_gateway FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mail_gateway FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mail_gateway FROM PUBLIC;
GRANT USAGE ON SCHEMA mail_gateway TO mail_gateway_user, mail_gateway_admin, mail_gateway_worker;

-- Administrators configure everything (they may write secrets; see docs/DECISIONS.md). The
-- queue and the chatter's messages are written only by the gateway (send_mail, post_message,
-- routing: they write as mail_gateway_worker), so that no row is planted around the API;
-- administrators may read them and delete old rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA mail_gateway TO mail_gateway_admin;
REVOKE INSERT, UPDATE ON mail_gateway.mail, mail_gateway.message FROM mail_gateway_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA mail_gateway TO mail_gateway_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA mail_gateway TO mail_gateway_admin;

-- The gateway itself (the workers, and the API's own writes): reads the configuration with its
-- secrets, writes the queue, received mail, the chatter, bounces and contacts, and the health
-- columns of the servers. It never changes configuration and never deletes.
GRANT SELECT ON ALL TABLES IN SCHEMA mail_gateway TO mail_gateway_worker;
GRANT INSERT, UPDATE ON mail_gateway.mail, mail_gateway.inbound, mail_gateway.follower,
    mail_gateway.contact TO mail_gateway_worker;
GRANT INSERT ON mail_gateway.message, mail_gateway.bounce, mail_gateway.blacklist
    TO mail_gateway_worker;
GRANT UPDATE (last_success_at, last_error_at, last_error) ON mail_gateway.outgoing_server
    TO mail_gateway_worker;
GRANT UPDATE (last_fetch_at, last_success_at, last_error_at, last_error, fetch_cursor)
    ON mail_gateway.incoming_server TO mail_gateway_worker;
-- OAuth2: the cached access token, a rotated refresh token (stored at once), the state.
GRANT UPDATE (access_token, expires_at, last_refresh_at, refresh_token, state, last_error,
              last_error_at)
    ON mail_gateway.oauth_account TO mail_gateway_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA mail_gateway TO mail_gateway_worker;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA mail_gateway TO mail_gateway_worker;

-- Users (ERP code) read the configuration but never a secret column.
GRANT SELECT ON mail_gateway.parameter, mail_gateway.alias, mail_gateway.blacklist
    TO mail_gateway_user;
GRANT SELECT (id, name, host, port, encryption, auth, username, client_cert, from_filter, priority,
              active, verify_tls, ca_cert, created_at, max_connections, max_mails_per_connection,
              oauth_account)
    ON mail_gateway.outgoing_server TO mail_gateway_user;
GRANT SELECT (id, name, protocol, host, port, encryption, auth, username, verify_tls, ca_cert, mailbox,
              priority, state, fetch_interval, keep_original, keep_attachments, active,
              last_fetch_at, last_error, created_at, oauth_account)
    ON mail_gateway.incoming_server TO mail_gateway_user;
GRANT SELECT (id, name, provider, tenant, token_endpoint, authorize_endpoint, client_id, scope,
              ca_cert, expires_at, last_refresh_at, state, last_error, last_error_at, created_at)
    ON mail_gateway.oauth_account TO mail_gateway_user;
-- ERP code queues mail (send_mail, never a direct INSERT) and reads its state; retry and
-- cancel are for administrators.
GRANT SELECT ON mail_gateway.mail TO mail_gateway_user;
-- … and mass mailing through the outbox view (each row goes through send_mail).
-- (SELECT: INSERT … RETURNING reads the new rows back; the view itself shows nothing.)
GRANT SELECT, INSERT ON mail_gateway.outbox TO mail_gateway_user;
GRANT SELECT (id, domain, selector, algorithm, public_key, active, created_at)
    ON mail_gateway.dkim_key TO mail_gateway_user;
GRANT SELECT ON mail_gateway.queue_status, mail_gateway.server_status, mail_gateway.worker_status
    TO mail_gateway_user;
-- The chatter: ERP code posts, follows and reads threads (post_message, follow, unfollow).
GRANT SELECT ON mail_gateway.message TO mail_gateway_user;
-- (UPDATE: following again renames the follower.)
GRANT SELECT, INSERT, UPDATE, DELETE ON mail_gateway.follower TO mail_gateway_user;
GRANT USAGE ON SEQUENCE mail_gateway.follower_id_seq TO mail_gateway_user;
GRANT SELECT ON mail_gateway.bounce TO mail_gateway_user;
-- The ERP fills the contacts.
GRANT SELECT, INSERT, UPDATE ON mail_gateway.contact TO mail_gateway_user;
GRANT USAGE ON SEQUENCE mail_gateway.contact_id_seq TO mail_gateway_user;
GRANT EXECUTE ON FUNCTION
    mail_gateway.get_parameter(text),
    mail_gateway.parameter_value(text),
    mail_gateway.parameter_default(text),
    mail_gateway.parameter_kind(text),
    mail_gateway.workers(),
    mail_gateway.find_outgoing_server(text, text),
    mail_gateway.normalize_email(text),
    mail_gateway.normalize_domain(text),
    mail_gateway.normalize_local_part(text),
    mail_gateway.normalize_from_filter(text),
    mail_gateway.send_mail(text, text[], text, text, text, text[], text[], text, jsonb, jsonb,
                           timestamptz, text, text, bigint),
    mail_gateway.follow(text, bigint, text, text),
    mail_gateway.unfollow(text, bigint, text),
    mail_gateway.post_message(text, bigint, text, text, text, text, jsonb)
    TO mail_gateway_user;

-- Rows of extension tables are dumped only when registered: every table that holds the
-- ERP's configuration or data is, with its identity sequence so restored ids stay free.
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.parameter', '');
-- (oauth_account before the servers that name it: pg_dump orders their data by foreign key.)
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.oauth_account', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.oauth_account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.outgoing_server', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.outgoing_server_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.incoming_server', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.incoming_server_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.alias', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.alias_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.contact', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.contact_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.blacklist', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.blacklist_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.mail', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.mail_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.dkim_key', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.dkim_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.inbound', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.inbound_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.message', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.follower', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.follower_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.bounce', '');
SELECT pg_catalog.pg_extension_config_dump('mail_gateway.bounce_id_seq', '');
