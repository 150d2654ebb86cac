//! What an image is made of: its layers in order and its configuration, found through an OCI
//! `index.json` (following nested indexes to the linux/amd64 manifest) or `docker save`'s
//! `manifest.json`.

use serde::Deserialize;

use crate::error::OciError;
use crate::source::{ImageSource, blob_path};

/// Nested indexes followed at most.
const MAX_INDEX_DEPTH: usize = 4;

/// One layer: where its bytes are, and the digest they must have (`None` for a legacy
/// `docker save` layer named by path only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub(crate) member: String,
    pub(crate) digest: Option<String>,
}

/// The parts of an image's configuration a template keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Environment variables, in the image's order.
    pub env: Vec<(String, String)>,
    /// The user processes run as (a name or a uid, maybe with `:group`); `None` is root.
    pub user: Option<String>,
    /// The working directory; `None` is `/`.
    pub workdir: Option<String>,
    /// The entrypoint, then the command: the image's main process.
    pub entrypoint: Vec<String>,
    /// The command (the entrypoint's arguments, or the process itself without one).
    pub cmd: Vec<String>,
}

/// An image's layers, bottom first, and configuration.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) layers: Vec<LayerRef>,
    pub(crate) config: ImageConfig,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize, Default)]
struct RunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "WorkingDir", default)]
    workdir: Option<String>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Reads what the image at `source` is made of.
pub(crate) fn read(source: &ImageSource) -> Result<Image, OciError> {
    if source.has("index.json") {
        let index: Index = source.read_json("index.json")?;
        let manifest = find_manifest(source, index, 0)?;
        let config: ConfigFile = source.read_blob_json(&manifest.config.digest)?;
        let layers = manifest
            .layers
            .iter()
            .map(|layer| {
                Ok(LayerRef {
                    member: blob_path(&layer.digest)?,
                    digest: Some(layer.digest.clone()),
                })
            })
            .collect::<Result<_, OciError>>()?;
        return Ok(Image {
            layers,
            config: config.into(),
        });
    }
    if source.has("manifest.json") {
        let manifests: Vec<DockerManifest> = source.read_json("manifest.json")?;
        let [manifest] = <[DockerManifest; 1]>::try_from(manifests).map_err(|all| {
            OciError::invalid(format!(
                "manifest.json lists {} images; import one image at a time",
                all.len()
            ))
        })?;
        let config: ConfigFile = source.read_json(&manifest.config)?;
        let layers = manifest
            .layers
            .into_iter()
            .map(|member| LayerRef {
                digest: member
                    .strip_prefix("blobs/sha256/")
                    .map(|hex| format!("sha256:{hex}")),
                member,
            })
            .collect();
        return Ok(Image {
            layers,
            config: config.into(),
        });
    }
    Err(OciError::NotFound {
        what: "index.json or manifest.json (not an OCI layout or a docker save tarball)".into(),
    })
}

/// The image manifest an index leads to: its only manifest, or its linux/amd64 one.
fn find_manifest(source: &ImageSource, index: Index, depth: usize) -> Result<Manifest, OciError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(OciError::invalid("indexes nest too deeply"));
    }
    let chosen = if index.manifests.len() == 1 {
        index.manifests.into_iter().next()
    } else {
        index.manifests.into_iter().find(|descriptor| {
            descriptor
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
    };
    let Some(descriptor) = chosen else {
        return Err(OciError::NotFound {
            what: "a linux/amd64 image manifest".into(),
        });
    };
    if INDEX_TYPES.contains(&descriptor.media_type.as_str()) {
        let nested: Index = source.read_blob_json(&descriptor.digest)?;
        return find_manifest(source, nested, depth + 1);
    }
    source.read_blob_json(&descriptor.digest)
}

impl From<ConfigFile> for ImageConfig {
    fn from(file: ConfigFile) -> Self {
        let run = file.config.unwrap_or_default();
        let env = run
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
            })
            .collect();
        Self {
            env,
            user: run.user.filter(|user| !user.is_empty()),
            workdir: run.workdir.filter(|dir| !dir.is_empty()),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
        }
    }
}
