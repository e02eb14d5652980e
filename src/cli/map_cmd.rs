//! `dualpub map --kind K [FILE]`: no network, no store.

use crate::config::RawConfig;
use crate::exit::{Exit, Failure};
use crate::map_input;
use crate::model::Kind;
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct MapArgs {
    /// Record kind: permit or penalty.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Kind,
    /// Source records as a JSON array, one JSON object (or `{"records": [...]}`) or JSON lines; standard input when
    /// absent or `-`.
    pub file: Option<PathBuf>,
}

pub fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| format!("`{s}` is not a kind; use permit or penalty"))
}

pub fn run(config: Option<&Path>, args: MapArgs) -> Result<Exit, Failure> {
    let env = super::env_vars();
    let (raw, origin) = RawConfig::load(RawConfig::locate(config).as_deref(), &env)?;
    super::common::init_logging(raw.log.format.as_deref(), raw.log.level.as_deref())?;
    let mappings = raw.mappings(&origin)?;
    let ctx = raw.mapping_context();
    let input = match args.file.as_deref() {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => std::fs::read(p)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))?,
    };
    let items = map_input::map_input(args.kind, &mappings, &ctx, &input).map_err(Failure::usage)?;
    let xml = map_input::render_xml(&items);
    let findings = map_input::render_findings(&items);
    let valid = items.iter().filter(|i| i.is_valid()).count();
    let mut out = super::common::Stdout;
    let _ = out.write_all(&xml);
    let _ = out.flush();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(findings.as_bytes());
    let _ = writeln!(
        err,
        "{} {} record(s): {valid} valid, {} invalid",
        items.len(),
        args.kind,
        items.len() - valid
    );
    Ok(if valid == items.len() {
        Exit::Ok
    } else {
        Exit::Attention
    })
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
    Ok(buf)
}
