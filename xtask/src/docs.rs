//! `cargo xtask docs`: the book under `docs/` (mdBook), with its command-line reference
//! regenerated from the binaries' own help by the test that checks it.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::util;

/// The mdBook release installed when it is missing.
const MDBOOK: &str = "0.5.4";

/// Installs mdBook when `mdbook` is missing.
pub fn mdbook() -> Result<()> {
    let mut check = Command::new("mdbook");
    check.arg("--version");
    util::install_when_missing(check, "mdbook", MDBOOK)
}

/// Rewrites the CLI reference, then builds the book into `docs/book`.
pub fn build() -> Result<()> {
    let mut write = Command::new(util::cargo_bin());
    write
        .args([
            "test",
            "--package",
            "vigil-tests",
            "--test",
            "docs",
            "the_cli_reference_is_the_binaries_own_help",
        ])
        .env("VIGIL_WRITE_DOCS", "1")
        .current_dir(util::workspace_root()?);
    util::run(write).context("regenerating docs/src/reference/cli.md failed")?;
    let docs = util::workspace_root()?.join("docs");
    let mut book = Command::new("mdbook");
    book.arg("build").arg(&docs);
    util::run(book).context("mdbook build failed")?;
    println!("the book: {}", docs.join("book/index.html").display());
    Ok(())
}
