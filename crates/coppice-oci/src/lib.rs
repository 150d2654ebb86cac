//! OCI image import: an image already on disk (an OCI image layout directory, or a tarball of
//! one such as `docker save` writes) becomes a directory tree a template can use, with the
//! parts of the image's configuration a template keeps.
//!
//! Every layer is read and checked before anything is written (blob digests, entry names,
//! and what each entry does to the tree the layers below it made), so an image with one
//! escaping entry is refused whole. Writing then goes through [`coppice_volume::VolumeFs`],
//! which walks every path one component at a time without following links. Owners are the
//! archive's, taken as sandbox ids and mapped to host ids through the runtime's id map.
//!
//! Everything blocks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod layer;
mod manifest;
mod source;
#[cfg(test)]
mod tests;
mod zstd;

use std::path::Path;

use coppice_core::volume::IdMap;
use coppice_volume::VolumeFs;

pub use error::{OciError, OciErrorKind};
pub use manifest::ImageConfig;

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The image's configuration.
    pub config: ImageConfig,
    /// How many layers were applied.
    pub layers: usize,
}

/// Writes the image at `image` into the existing, empty directory `into`, owners mapped
/// through `ids`.
///
/// # Errors
/// [`OciErrorKind::Invalid`] for a refused image (nothing written); `NotFound`,
/// `Unsupported`, `Io`. After an `Io` failure `into` holds part of the image: the caller
/// discards it.
pub fn import(image: &Path, into: &Path, ids: IdMap) -> Result<Imported, OciError> {
    let source = source::ImageSource::open(image)?;
    let image = manifest::read(&source)?;
    let mut tree = layer::Tree::default();
    let mut plans = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        let plan = layer::plan(&source, layer)?;
        tree.check(&plan)?;
        plans.push(plan);
    }
    let fs = VolumeFs::open(into, ids)?;
    for (layer, plan) in image.layers.iter().zip(&plans) {
        layer::apply(&source, layer, plan, &fs, ids)?;
    }
    Ok(Imported {
        config: image.config,
        layers: image.layers.len(),
    })
}

/// Writes the root filesystem tarball `tar` (plain or gzip; a bootstrap tool's output, say)
/// into the existing, empty directory `into`, owners mapped through `ids`, with the same
/// checks as an image's layer: refused whole before anything is written.
///
/// # Errors
/// As [`import`].
pub fn import_rootfs_tar(tar: &Path, into: &Path, ids: IdMap) -> Result<(), OciError> {
    let (Some(dir), Some(name)) = (tar.parent(), tar.file_name().and_then(|n| n.to_str())) else {
        return Err(OciError::NotFound {
            what: tar.display().to_string(),
        });
    };
    let source = source::ImageSource::Directory(dir.to_owned());
    let layer = manifest::LayerRef {
        member: name.to_owned(),
        digest: None,
    };
    let plan = layer::plan(&source, &layer)?;
    layer::Tree::default().check(&plan)?;
    let fs = VolumeFs::open(into, ids)?;
    layer::apply(&source, &layer, &plan, &fs, ids)
}
