//! Re-encodes golden vectors: `encode_vectors <input-dir> <output-dir>` decodes every
//! `*.xml` in the input directory and writes what the encoder makes of it to
//! `<output-dir>/<name>.xml`, so the encoder's own output can be checked against the XSD.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: encode_vectors <input-dir> <output-dir>");
        return ExitCode::from(2);
    };
    let run = || -> Result<usize, String> {
        std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
        let mut n = 0;
        let mut entries: Vec<_> = std::fs::read_dir(input)
            .map_err(|e| format!("{}: {e}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let message = dmdelegate::Message::from_xml(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let target = output.join(path.file_name().expect("a file"));
            std::fs::write(&target, message.to_xml())
                .map_err(|e| format!("{}: {e}", target.display()))?;
            n += 1;
        }
        Ok(n)
    };
    match run() {
        Ok(n) => {
            println!("encoded {n} vectors into {}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("encode_vectors: {e}");
            ExitCode::FAILURE
        }
    }
}
