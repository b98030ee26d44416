//! The format table in `docs/formats.md` is generated from the code: this test regenerates it
//! and fails when the committed docs differ, so the docs cannot drift from `Format::facts()`.

#[path = "../examples/common/format_table.rs"]
mod format_table;

use lowbit::formats::Format;

#[test]
fn docs_format_table_is_up_to_date() -> Result<(), String> {
    let path = format_table::docs_path();
    let doc = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let formats = format_table::parse_all(format_table::DOC_FORMATS).map_err(|e| e.to_string())?;
    let table = format_table::markdown(&formats);
    let current = format_table::current_section(&doc).ok_or_else(|| {
        format!(
            "{} has no {} … {} section",
            path.display(),
            format_table::START,
            format_table::END
        )
    })?;
    if current != table {
        return Err(format!(
            "the format table in {} is out of date; regenerate it with\n\n    {}\n\n--- expected ---\n{table}--- found ---\n{current}",
            path.display(),
            format_table::UPDATE_COMMAND,
        ));
    }
    // Splicing the current table back in must be a no-op (the markers are well formed).
    assert_eq!(format_table::splice(&doc, &table)?, doc);
    Ok(())
}

#[test]
fn documented_names_are_canonical() -> Result<(), String> {
    // Each row is labelled with `Display`, which must parse back to the same format, and the
    // documented list covers every named format.
    let formats = format_table::parse_all(format_table::DOC_FORMATS).map_err(|e| e.to_string())?;
    for (name, f) in format_table::DOC_FORMATS.iter().zip(&formats) {
        assert_eq!(f.to_string(), *name, "documented name is not canonical");
        let back: Format = f
            .to_string()
            .parse()
            .map_err(|e: lowbit::formats::FormatError| e.to_string())?;
        assert_eq!(back, *f);
    }
    for named in Format::named() {
        assert!(
            formats.contains(&named),
            "{named} is missing from the documented table"
        );
    }
    Ok(())
}
