-- Run once, when the regression database is created: the extension, a catchall domain, and
-- `try`, which runs a statement and prints its SQLSTATE, message and hint (no source
-- locations, which change with every edit).
CREATE EXTENSION mail_gateway;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
-- The ERP's table an alias creates records in.
CREATE TABLE lead (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    message text;
    hint text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN state || ' ' || message || coalesce(E'\nHINT: ' || nullif(hint, ''), '');
END
$$;
