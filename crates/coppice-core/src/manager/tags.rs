//! Template tags: `name:tag` names one build of template `name` (the name itself is its
//! latest build). A tag is a template of its own made of the build's layers (nothing is
//! copied), so sandboxes start from it like from any other, and a later build of the name
//! leaves it as it was. Only builds are tagged.

use std::sync::Arc;

use super::{ManagerError, SandboxManager, blocking};
use crate::id::{LATEST_TAG, TemplateId};
use crate::recipe::RECIPE_DIGEST_PREFIX;
use crate::storage::{TemplateInfo, TemplateMeta};

impl SandboxManager {
    /// The lock of `id`'s name (its tags share it): builds, tags and deletes of one name
    /// take their turns.
    pub(super) async fn lock_template_name(
        &self,
        id: &TemplateId,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let name = id.with_tag(LATEST_TAG).unwrap_or_else(|_| id.clone());
        let lock = Arc::clone(
            self.inner
                .template_builds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(name)
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// Makes every tag of `tags` on `target`'s name stand for `target` (`name` or
    /// `name:tag`): a tag that named another build is moved, `latest` makes `target` the
    /// name's own build. Returns the ids made.
    ///
    /// # Errors
    /// `TemplateNotFound`; `NotABuild` for a target no build made; `InvalidId` for a bad
    /// tag; storage failures.
    pub async fn tag_template(
        &self,
        target: &TemplateId,
        tags: &[String],
    ) -> Result<Vec<TemplateId>, ManagerError> {
        let _name = self.lock_template_name(target).await;
        self.tag_locked(target, tags).await
    }

    /// [`Self::tag_template`] with the name's lock held by the caller.
    pub(super) async fn tag_locked(
        &self,
        target: &TemplateId,
        tags: &[String],
    ) -> Result<Vec<TemplateId>, ManagerError> {
        let built = self.template(target).await?;
        let Some(digest) = built
            .built_from
            .filter(|digest| digest.starts_with(RECIPE_DIGEST_PREFIX))
        else {
            return Err(ManagerError::NotABuild { id: target.clone() });
        };
        let ids = tags
            .iter()
            .map(|tag| target.with_tag(tag))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ManagerError::InvalidId { source })?;
        // `latest` replaces the name itself, which only a name a user may build can be.
        if ids.iter().any(|id| id.tag().is_none()) {
            Self::check_template_name(
                &target
                    .with_tag(LATEST_TAG)
                    .map_err(|source| ManagerError::InvalidId { source })?,
            )?;
        }
        let mut made = Vec::new();
        for id in ids {
            if id == *target {
                continue;
            }
            let meta = TemplateMeta {
                built_from: Some(digest.clone()),
                ..TemplateMeta::default()
            };
            let storage = Arc::clone(&self.inner.backends.storage);
            let (tagged, from) = (id.clone(), target.clone());
            blocking("tag template", move || {
                storage.derive_template(&tagged, &from, &meta)
            })
            .await?
            .map_err(|source| ManagerError::from_storage("tag template", source))?;
            // The tag's build log is its build's.
            let log = self.template_build_log(target).await?;
            self.keep_build_log(&id, log).await;
            made.push(id);
        }
        Ok(made)
    }

    /// Removes tags of template `name` (sandboxes made from them keep their files).
    ///
    /// # Errors
    /// `InvalidId` for a bad tag, or `latest` (the name itself: delete the template);
    /// `TemplateNotFound` for a tag the name does not have.
    pub async fn untag_template(
        &self,
        name: &TemplateId,
        tags: &[String],
    ) -> Result<(), ManagerError> {
        let _name = self.lock_template_name(name).await;
        for tag in tags {
            let id = name
                .with_tag(tag)
                .map_err(|source| ManagerError::InvalidId { source })?;
            if id.tag().is_none() {
                return Err(ManagerError::InvalidTag {
                    tag: tag.clone(),
                    reason: "it is the template itself: delete the template instead",
                });
            }
            self.delete_one_template(&id).await?;
        }
        Ok(())
    }

    /// Template `name`'s tags and the builds they stand for, `latest` (the name itself)
    /// first.
    ///
    /// # Errors
    /// `TemplateNotFound` when there is no template `name`; storage failures.
    pub async fn template_tags(
        &self,
        name: &TemplateId,
    ) -> Result<Vec<(String, TemplateInfo)>, ManagerError> {
        let own = self
            .template(
                &name
                    .with_tag(LATEST_TAG)
                    .map_err(|source| ManagerError::InvalidId { source })?,
            )
            .await?;
        let mut tags = vec![(LATEST_TAG.to_owned(), own)];
        let mut others: Vec<(String, TemplateInfo)> = self
            .all_templates()
            .await?
            .into_iter()
            .filter(|template| template.id.name() == name.name())
            .filter_map(|template| Some((template.id.tag()?.to_owned(), template)))
            .collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        tags.extend(others);
        Ok(tags)
    }
}
