-- The public functions' and tables' errors: SQLSTATE, message and hint, pinned.
\pset format unaligned
\pset tuples_only on

-- Parameters.
SELECT try($$SELECT mail_gateway.set_parameter('mail.bounce.spread', 'a week')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.send.daily_limit', '-1')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.catchall.domain', 'not a domain')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.catchall.alias', 'a b')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.auto_reply.daily_share', '101')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'nowhere')$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.catchall.alias', NULL)$$);
SELECT try($$UPDATE mail_gateway.parameter SET value = 'x' WHERE key = 'mail.fetch.interval'$$);
SELECT try($$SELECT mail_gateway.set_parameter('mail.unknown.key', '1')$$);

-- Sending.
SELECT try($$SELECT mail_gateway.send_mail('not an address', ARRAY['b@y.com'], 's')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY[]::text[], 's')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com', 'nobody'], 's')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], 's', kind => 'auto_reply')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], 's', kind => 'bulk')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], E'two\r\nlines')$$);
SELECT try($$SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], 's', headers => '{"Bcc": "c@z.com"}')$$);
SELECT try($$SELECT mail_gateway.retry_mail(424242)$$);
SELECT try($$SELECT mail_gateway.cancel_mail(424242)$$);
SELECT try($$SELECT mail_gateway.create_dkim_key('mycompany.com', 'mail', 'dsa')$$);
SELECT try($$SELECT mail_gateway.create_dkim_key('mycompany.com', 'bad_selector!')$$);
SELECT try($$SELECT * FROM mail_gateway.check_domain('not a domain')$$);
SELECT try($$SELECT mail_gateway.test_outgoing_server('nowhere')$$);

-- Servers.
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('s1', 'smtp.x.com', 70000, 'starttls')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('s1', 'smtp.x.com', 587, 'tls')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('s1', 'not a host', 587, 'starttls')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth, username, password) VALUES ('s1', 'smtp.x.com', 25, 'none', 'login', 'u', 'p')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth) VALUES ('s1', 'smtp.x.com', 587, 'starttls', 'login')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth) VALUES ('s1', 'smtp.x.com', 587, 'starttls', 'certificate')$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, max_connections) VALUES ('s1', 'smtp.x.com', 587, 'starttls', 0)$$);
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, max_mails_per_connection) VALUES ('s1', 'smtp.x.com', 587, 'starttls', 0)$$);
SELECT try($$INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password) VALUES ('i1', 'pop2', 'mail.x.com', 995, 'ssl', 'u', 'p')$$);
SELECT try($$INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password) VALUES ('i1', 'imap', 'mail.x.com', 143, 'none', 'u', 'p')$$);
SELECT try($$INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password, state) VALUES ('i1', 'imap', 'mail.x.com', 993, 'ssl', 'u', 'p', 'confirmed')$$);
SELECT try($$SELECT mail_gateway.test_incoming_server('nowhere')$$);
SELECT try($$SELECT mail_gateway.fetch_now('nowhere')$$);

-- OAuth2.
SELECT try($$INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth) VALUES ('s1', 'smtp.x.com', 587, 'starttls', 'xoauth2')$$);
SELECT try($$SELECT mail_gateway.set_oauth(server => 'nowhere', provider => 'microsoft', client_id => 'c')$$);
SELECT try($$SELECT mail_gateway.set_oauth(account => 'a1', provider => 'yahoo', client_id => 'c')$$);
SELECT try($$SELECT mail_gateway.set_oauth(account => 'a1', provider => 'custom', client_id => 'c')$$);
SELECT try($$SELECT mail_gateway.oauth_authorize_url('nowhere')$$);
SELECT try($$SELECT mail_gateway.oauth_exchange_code('nowhere', 'code')$$);

-- Received mail and routing.
SELECT try($$SELECT mail_gateway.reprocess(424242)$$);
SELECT try($$SELECT mail_gateway.process_message('From: a@x.com', server => 'nowhere')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model) VALUES ('catchall', 'lead')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'no_such_table')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('sales', 'lead', 'lower(text)'::regprocedure)$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model, contact_policy) VALUES ('sales', 'lead', 'friends')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model, defaults) VALUES ('sales', 'lead', '[1]')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'lead')$$);
SELECT try($$INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'lead')$$);

-- Chatter.
SELECT try($$SELECT mail_gateway.follow('lead', 1, 'not an address')$$);
SELECT try($$SELECT mail_gateway.post_message('', 1, 'a@x.com', 'body')$$);
SELECT try($$SELECT mail_gateway.post_message('lead', 1, 'not an address', 'body')$$);

-- The queue has one way in.
SELECT try($$INSERT INTO mail_gateway.outbox (email_from, email_to, subject) VALUES ('not an address', ARRAY['b@y.com'], 's')$$);
SELECT try($$INSERT INTO mail_gateway.outbox (email_from, email_to, subject, kind) VALUES ('a@x.com', ARRAY['b@y.com'], 's', 'auto_reply')$$);
