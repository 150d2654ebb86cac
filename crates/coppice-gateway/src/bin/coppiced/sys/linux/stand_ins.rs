//! The stand-ins of the shipped templates, made at start over the host's `/usr` until each is
//! built from its recipe: `code-interpreter-v1` (the base template with coppice's code
//! interpreter, started in every sandbox made from it and waited for on port 49999) and
//! `python` (the base template under that name).

use coppice_overlay::{SourceFile, TemplateSource};

use crate::shipped::{INTERPRETER_DIR, INTERPRETER_FILES, INTERPRETER_TEMPLATE, PYTHON_TEMPLATE};

/// The stand-ins' sources.
pub(crate) fn sources() -> anyhow::Result<Vec<TemplateSource>> {
    Ok(vec![python()?, interpreter()?])
}

fn python() -> anyhow::Result<TemplateSource> {
    Ok(TemplateSource {
        id: PYTHON_TEMPLATE.parse()?,
        description: "the host's Python, until the python template is built".into(),
        files: Vec::new(),
        start: None,
    })
}

fn interpreter() -> anyhow::Result<TemplateSource> {
    Ok(TemplateSource {
        id: INTERPRETER_TEMPLATE.parse()?,
        description: "coppice's code interpreter over the base template".into(),
        files: INTERPRETER_FILES
            .iter()
            .map(|(name, contents)| SourceFile {
                path: format!("{INTERPRETER_DIR}/{name}"),
                contents: contents.to_vec(),
                mode: 0o644,
            })
            .collect(),
        // The server starts as the recipe's does.
        start: crate::shipped::interpreter_recipe()?.start,
    })
}
