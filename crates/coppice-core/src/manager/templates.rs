//! Templates as callers see them: the list, one template's details, and templates imported
//! from OCI images on the host.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ManagerError, SandboxManager, blocking};
use crate::id::TemplateId;
use crate::storage::TemplateInfo;

impl SandboxManager {
    /// Refuses an id a caller may not give a new template (the build cache's, the template
    /// routes' own names).
    ///
    /// # Errors
    /// `InvalidRecipe`-like refusal naming why.
    pub fn check_template_name(id: &TemplateId) -> Result<(), ManagerError> {
        Ok(crate::recipe::check_template_name(id)?)
    }

    /// Every template, but the build cache's steps and tagged builds (see
    /// [`Self::template_tags`]).
    ///
    /// # Errors
    /// A storage failure.
    pub async fn templates(&self) -> Result<Vec<TemplateInfo>, ManagerError> {
        let mut templates = self.all_templates().await?;
        templates
            .retain(|template| !Self::is_build_cache(&template.id) && template.id.tag().is_none());
        Ok(templates)
    }

    pub(super) async fn all_templates(&self) -> Result<Vec<TemplateInfo>, ManagerError> {
        let storage = Arc::clone(&self.inner.backends.storage);
        blocking("list templates", move || storage.templates())
            .await?
            .map_err(|source| ManagerError::from_storage("list templates", source))
    }

    /// One template.
    ///
    /// # Errors
    /// `TemplateNotFound`; a storage failure.
    pub async fn template(&self, id: &TemplateId) -> Result<TemplateInfo, ManagerError> {
        let storage = Arc::clone(&self.inner.backends.storage);
        let id = id.clone();
        blocking("look up template", move || storage.template(&id))
            .await?
            .map_err(|source| ManagerError::from_storage("look up template", source))
    }

    /// Makes template `id` from the OCI image at `image` on the daemon's host (an image
    /// layout directory, or a `docker save` tarball). Its sandboxes get the image's
    /// environment, user and working directory, and start its entrypoint.
    ///
    /// # Errors
    /// `InvalidSpec`-like refusals for a relative path; storage refusals (the template
    /// exists; the image is missing, malformed or refused: nothing is kept).
    pub async fn import_template(
        &self,
        id: TemplateId,
        image: PathBuf,
    ) -> Result<TemplateInfo, ManagerError> {
        Self::check_template_name(&id)?;
        if !image.is_absolute() {
            return Err(ManagerError::BadDirectory {
                path: image.display().to_string(),
                reason: "the image's path must be absolute (a path on the daemon's host)".into(),
            });
        }
        let inner = Arc::clone(&self.inner);
        blocking("import image", move || {
            let ids = inner.backends.runtime.id_map();
            inner.backends.storage.import_image(&id, &image, ids)
        })
        .await?
        .map_err(|source| ManagerError::from_storage("import image", source))
    }
}
