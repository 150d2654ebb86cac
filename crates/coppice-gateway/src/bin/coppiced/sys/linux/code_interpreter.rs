//! The `code-interpreter-v1` template: the base template with coppice's code interpreter (its
//! sources embedded in the daemon) under `/opt/coppice/code-interpreter`, started in every
//! sandbox made from it and waited for on port 49999.

use coppice_core::storage::TemplateStart;
use coppice_overlay::{SourceFile, TemplateSource};

/// The template's id, the one the e2b-code-interpreter SDKs ask for.
pub(crate) const TEMPLATE: &str = "code-interpreter-v1";
/// Where the interpreter's package lives inside the sandbox.
const INSTALL_DIR: &str = "opt/coppice/code-interpreter";

/// The interpreter's files, as the daemon was built with them.
const FILES: &[(&str, &[u8])] = &[
    (
        "__init__.py",
        include_bytes!(
            "../../../../../../../templates/code-interpreter/server/coppice_interpreter/__init__.py"
        ),
    ),
    (
        "contexts.py",
        include_bytes!(
            "../../../../../../../templates/code-interpreter/server/coppice_interpreter/contexts.py"
        ),
    ),
    (
        "js_worker.js",
        include_bytes!(
            "../../../../../../../templates/code-interpreter/server/coppice_interpreter/js_worker.js"
        ),
    ),
    (
        "python_worker.py",
        include_bytes!(
            "../../../../../../../templates/code-interpreter/server/coppice_interpreter/python_worker.py"
        ),
    ),
    (
        "server.py",
        include_bytes!(
            "../../../../../../../templates/code-interpreter/server/coppice_interpreter/server.py"
        ),
    ),
];

/// The template's sources.
pub(crate) fn source() -> anyhow::Result<TemplateSource> {
    Ok(TemplateSource {
        id: TEMPLATE.parse()?,
        description: "coppice's code interpreter over the base template".into(),
        files: FILES
            .iter()
            .map(|(name, contents)| SourceFile {
                path: format!("{INSTALL_DIR}/coppice_interpreter/{name}"),
                contents: contents.to_vec(),
                mode: 0o644,
            })
            .collect(),
        start: TemplateStart {
            command: format!("cd /{INSTALL_DIR} && exec python3 -m coppice_interpreter.server"),
            // It listens once its default contexts are up.
            ready: Some("bash -c 'exec 3<>/dev/tcp/127.0.0.1/49999'".into()),
        },
    })
}
