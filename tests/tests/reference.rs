//! docs/REFERENCE.md against the catalog of a fresh install: every function with its exact
//! signature and who may call it, every table and view with its columns and their types in
//! order, every CHECK list of values, every parameter with its default and kind, every setting
//! with its default and context. A change to the interface fails here until the page says it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mail_gateway_tests::{Client, Gateway};

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/REFERENCE.md"))
        .expect("docs/REFERENCE.md")
}

/// The lines of the section that starts with `heading` (up to the next heading of its level).
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.split(' ').next().unwrap();
    let mut lines = text.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "REFERENCE.md has no `{heading}`");
    lines
        .take_while(|l| !(l.starts_with(level) && l.as_bytes().get(level.len()) == Some(&b' ')))
        .collect()
}

/// The cells of a Markdown table row, trimmed; `None` for any other line.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// `` `x` `` → `x`.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

fn rows(client: &mut Client, sql: &str) -> Vec<Vec<String>> {
    client
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|row| (0..row.len()).map(|i| row.get::<_, String>(i)).collect())
        .collect()
}

/// Prints what only one side has, and fails when they differ.
fn same<T: Ord + std::fmt::Debug + Clone>(what: &str, page: &BTreeSet<T>, catalog: &BTreeSet<T>) {
    let missing: Vec<_> = catalog.difference(page).collect();
    let stale: Vec<_> = page.difference(catalog).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/REFERENCE.md is out of date ({what}).\nIn the catalog, not on the page: {missing:#?}\nOn the page, not in the catalog: {stale:#?}"
    );
}

#[test]
fn the_reference_is_the_catalog() {
    let (_cluster, mut db) = Gateway::new().start();
    let page = reference();

    // Functions: "`mail_gateway.name(arguments) → result` · **user**".
    let listed: BTreeSet<(String, String)> = page
        .lines()
        .filter_map(|l| {
            let l = l.trim_end();
            let rest = l.strip_prefix("`mail_gateway.")?;
            let (signature, who) = rest.split_once("` · **")?;
            Some((signature.to_string(), who.strip_suffix("**")?.to_string()))
        })
        .collect();
    let functions: BTreeSet<(String, String)> = rows(
        &mut db,
        "SELECT p.proname || '(' || pg_get_function_arguments(p.oid) || ') → '
                || pg_get_function_result(p.oid),
                CASE WHEN has_function_privilege('mail_gateway_user', p.oid, 'EXECUTE') THEN 'user'
                     WHEN has_function_privilege('mail_gateway_admin', p.oid, 'EXECUTE') THEN 'admin'
                     ELSE 'nobody' END
         FROM pg_proc p
         WHERE p.pronamespace = 'mail_gateway'::regnamespace
           AND p.prorettype <> 'trigger'::regtype",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    same("functions", &listed, &functions);

    // Tables and views: "### Table `name`" then "| `column` | `type` | meaning |" rows.
    let mut documented: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for line in page.lines() {
        if let Some(name) = line
            .strip_prefix("### Table ")
            .or_else(|| line.strip_prefix("### View "))
        {
            let kind = if line.starts_with("### Table") {
                "r"
            } else {
                "v"
            };
            let key = format!("{kind} {}", code(name).unwrap_or(name));
            documented.entry(key.clone()).or_default();
            current = Some(key);
        } else if line.starts_with('#') {
            current = None;
        } else if let (Some(rel), Some(c)) = (&current, cells(line))
            && let (Some(column), Some(Some(ty))) = (code(c[0]), c.get(1).map(|t| code(t)))
        {
            documented
                .get_mut(rel)
                .unwrap()
                .push((column.to_string(), ty.to_string()));
        }
    }
    let mut catalog: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in rows(
        &mut db,
        "SELECT c.relkind::text || ' ' || c.relname, a.attname::text,
                format_type(a.atttypid, a.atttypmod)
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'mail_gateway'::regnamespace AND c.relkind IN ('r', 'v')
         ORDER BY c.relname, a.attnum",
    ) {
        catalog
            .entry(r[0].clone())
            .or_default()
            .push((r[1].clone(), r[2].clone()));
    }
    let flat = |m: &BTreeMap<String, Vec<(String, String)>>| -> BTreeSet<String> {
        m.iter()
            .flat_map(|(rel, cols)| {
                cols.iter()
                    .enumerate()
                    .map(move |(i, (c, t))| format!("{rel} #{} {c} {t}", i + 1))
            })
            .collect()
    };
    same(
        "tables and views: kind name #position column type",
        &flat(&documented),
        &flat(&catalog),
    );

    // CHECK lists: "| `table.column` | `a`, `b` |" in "## States".
    let states: BTreeSet<String> = section(&page, "## States")
        .into_iter()
        .filter_map(cells)
        .filter_map(|c| {
            let column = code(c[0])?;
            let values: Vec<&str> = c
                .get(1)?
                .split(", ")
                .map(|v| code(v))
                .collect::<Option<_>>()?;
            Some(format!("{column}: {}", values.join(" ")))
        })
        .collect();
    let checks: BTreeSet<String> = rows(
        &mut db,
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid)
         FROM pg_constraint
         WHERE contype = 'c' AND connamespace = 'mail_gateway'::regnamespace
           AND pg_get_constraintdef(oid) LIKE '%= ANY (ARRAY[%'",
    )
    .into_iter()
    .map(|r| {
        let table = r[0].trim_start_matches("mail_gateway.");
        let def = &r[1];
        let column = def
            .trim_start_matches("CHECK ((")
            .split(" = ANY")
            .next()
            .unwrap();
        let values: Vec<&str> = def.split('\'').skip(1).step_by(2).collect();
        format!("{table}.{column}: {}", values.join(" "))
    })
    .collect();
    same("states (CHECK lists)", &states, &checks);

    // Parameters: "| `key` | `default` or — | kind | meaning |".
    let parameters: BTreeSet<String> = section(&page, "## Parameters")
        .into_iter()
        .filter_map(cells)
        .filter_map(|c| {
            let key = code(c[0])?;
            let default = if c[1] == "—" { "" } else { code(c[1])? };
            Some(format!("{key} = {default} ({})", c[2]))
        })
        .collect();
    let defaults: BTreeSet<String> = rows(
        &mut db,
        "SELECT d.key, coalesce(d.value, ''), mail_gateway.parameter_kind(d.key)
         FROM mail_gateway.parameter_defaults() d",
    )
    .into_iter()
    .map(|r| format!("{} = {} ({})", r[0], r[1], r[2]))
    .collect();
    same("parameters", &parameters, &defaults);

    // Settings: "| `name` | `default` or empty | context | meaning |", defaults as SHOW says.
    let settings: BTreeSet<String> = section(&page, "## Settings")
        .into_iter()
        .filter_map(cells)
        .filter_map(|c| {
            let name = code(c[0])?;
            let default = if c[1] == "empty" { "" } else { code(c[1])? };
            Some(format!("{name} = {default} ({})", c[2]))
        })
        .collect();
    let gucs: BTreeSet<String> = rows(
        &mut db,
        "SELECT name, current_setting(name),
                CASE context WHEN 'sighup' THEN 'reload' WHEN 'postmaster' THEN 'restart'
                             WHEN 'superuser' THEN 'superuser, per session'
                             WHEN 'user' THEN 'any user, per session' ELSE context END
         FROM pg_settings WHERE name LIKE 'mail_gateway.%'",
    )
    .into_iter()
    .map(|r| format!("{} = {} ({})", r[0], r[1], r[2]))
    .collect();
    same("settings", &settings, &gucs);
}
