-- The system parameters' defaults come from one list (core/src/parameters.rs, through
-- parameter_defaults()). CREATE EXTENSION seeds the table with them, and every SQL reader asks
-- parameter_value(), which reads a deleted row as its default.

INSERT INTO mail_gateway.parameter (key, value)
SELECT d.key, d.value FROM mail_gateway.parameter_defaults() AS d;

CREATE FUNCTION mail_gateway.parameter_value(key text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT p.value FROM mail_gateway.parameter p WHERE p.key = $1),
                    mail_gateway.parameter_default($1))
$$;
COMMENT ON FUNCTION mail_gateway.parameter_value(text) IS
    'A system parameter as the gateway reads it: its value, or its default when the row is missing';
