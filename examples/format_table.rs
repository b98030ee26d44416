//! Prints the facts of every named number format (bits, exponent/mantissa split, bias,
//! special-value convention, max, min normal, min subnormal, inf/NaN codes, number of finite
//! values), computed by `Format::facts()` from the code — the table of `docs/formats.md`.
//!
//! ```text
//! cargo run --release --example format_table                   # print the table
//! cargo run --release --example format_table -- e6m1 int3_full # add any formats you like
//! cargo run --example format_table -- --write-docs             # regenerate docs/formats.md
//! ```
//!
//! `tests/docs_format_table.rs` fails when `docs/formats.md` no longer matches this output.

#[path = "common/format_table.rs"]
mod format_table;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Print the facts of lowbit's number formats as a Markdown table",
    after_help = format_table::UPDATE_COMMAND
)]
struct Args {
    /// Extra formats to append to the table (any name `Format` parses: e6m1, e4m3_b9_fn, uint3, …).
    formats: Vec<String>,
    /// Rewrite the generated table in docs/formats.md (the documented formats only).
    #[arg(long)]
    write_docs: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let documented = format_table::parse_all(format_table::DOC_FORMATS)?;
    if args.write_docs {
        let path = format_table::docs_path();
        let doc = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let table = format_table::markdown(&documented);
        if format_table::current_section(&doc) == Some(table.as_str()) {
            println!("{} is up to date", path.display());
        } else {
            let updated = format_table::splice(&doc, &table)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::write(&path, updated)?;
            println!("rewrote the format table in {}", path.display());
        }
        return Ok(());
    }
    let mut formats = documented;
    for name in &args.formats {
        formats.push(name.parse()?);
    }
    print!("{}", format_table::markdown(&formats));
    Ok(())
}
