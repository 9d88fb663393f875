//! `haswarmctl schema`: prints a kind's JSON Schema, or writes every schema
//! file into a folder.

use crate::cli::SchemaArgs;
use crate::exit::ExitCode;
use crate::report;
use haswarm_crds::schema::{all_schema_files, schema_file_text};
use haswarm_crds::KindInfo;

pub fn run(args: &SchemaArgs) -> ExitCode {
    if let Some(dir) = &args.write {
        for (file, text) in all_schema_files() {
            let path = dir.join(&file);
            if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text))
            {
                report::error(&format!("cannot write {}: {e}", path.display()));
                return ExitCode::Input;
            }
            println!("wrote {}", path.display());
        }
        return ExitCode::Success;
    }
    let name = args.kind.as_deref().unwrap_or_default();
    match KindInfo::lookup(name) {
        Some(k) => {
            print!("{}", schema_file_text(k));
            ExitCode::Success
        }
        None => {
            report::error(&format!(
                "unknown kind {name:?}: use postgrescluster (pgc), redissentinelgroup (rsg) or sharedvolume (sv)"
            ));
            ExitCode::Invalid
        }
    }
}
