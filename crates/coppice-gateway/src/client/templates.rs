//! The typed client's calls for templates: list, details, import from an OCI image, build,
//! delete, and tags.

use bytes::BytesMut;
use futures_util::StreamExt;
use http_body_util::BodyStream;

use super::{Client, ClientError};

impl Client {
    /// Every template, as the gateway describes them (`templateID`, `sizeBytes`, …).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn templates(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let (_, bytes) =
            Self::whole(self.send(self.api("GET", "/templates", None)?).await?).await?;
        Self::json(&bytes)
    }

    /// One template.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown one).
    pub async fn template(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let request = self.api("GET", &format!("/templates/{id}"), None)?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Makes template `id` from the OCI image at `image` on the gateway's host.
    ///
    /// # Errors
    /// [`ClientError`] (400 for a missing or refused image, 409 for a taken name).
    pub async fn import_template(
        &self,
        id: &str,
        image: &std::path::Path,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "templateID": id, "image": image });
        let request = self.api("POST", "/templates/imports", Some(body))?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Builds a template from `recipe` (the JSON of `POST /templates/builds`), handing each
    /// log line to `on_log` as it comes; returns the template.
    ///
    /// # Errors
    /// [`ClientError::Status`] for a refused recipe or a failed build (its message names the
    /// step).
    pub async fn build_template(
        &self,
        recipe: serde_json::Value,
        mut on_log: impl FnMut(&str),
    ) -> Result<serde_json::Value, ClientError> {
        let request = self.api("POST", "/templates/builds", Some(recipe))?;
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(Self::whole(response)
                .await
                .err()
                .unwrap_or(ClientError::Decode("build refused".into())));
        }
        let mut body = BodyStream::new(response.into_body());
        let mut buffer = BytesMut::new();
        let mut last = None;
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| ClientError::Decode(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(end + 1);
                let value: serde_json::Value = Self::json(&line)?;
                if let Some(text) = value["log"].as_str() {
                    on_log(text);
                } else {
                    last = Some(value);
                }
            }
        }
        let Some(last) = last else {
            return Err(ClientError::Decode(
                "the build's stream ended without its outcome".into(),
            ));
        };
        if last["status"] == "ready" {
            return Ok(last["template"].clone());
        }
        Err(ClientError::Status {
            status: u16::try_from(last["code"].as_u64().unwrap_or(500)).unwrap_or(500),
            message: last["message"]
                .as_str()
                .unwrap_or("the build failed")
                .to_owned(),
        })
    }

    /// Deletes a template (a snapshot, an imported one, …; not a built-in one).
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown one).
    pub async fn delete_template(&self, id: &str) -> Result<(), ClientError> {
        let request = self.api("DELETE", &format!("/templates/{id}"), None)?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Points `tags` of `target`'s name (`name` or `name:tag`) at that build.
    ///
    /// # Errors
    /// [`ClientError`] (400 for a template no build made or a bad tag, 404 for none).
    pub async fn tag_template(&self, target: &str, tags: &[String]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "target": target, "tags": tags });
        let request = self.api("POST", "/templates/tags", Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Removes `tags` of template `name`.
    ///
    /// # Errors
    /// [`ClientError`] (404 for a tag it does not have).
    pub async fn untag_template(&self, name: &str, tags: &[String]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "name": name, "tags": tags });
        let request = self.api("DELETE", "/templates/tags", Some(body))?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// The log of the build that made template `id` (empty for one no build made).
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown template).
    pub async fn template_build_log(&self, id: &str) -> Result<Vec<String>, ClientError> {
        let request = self.api("GET", &format!("/templates/{id}/build-log"), None)?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        let answer: serde_json::Value = Self::json(&bytes)?;
        Ok(answer["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|line| line.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Deletes the build cache's steps unused for `older_than` (at least an hour); returns
    /// their ids.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn prune_build_cache(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>, ClientError> {
        let body = serde_json::json!({ "olderThanSeconds": older_than.as_secs() });
        let request = self.api("POST", "/templates/builds/prune", Some(body))?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        let answer: serde_json::Value = Self::json(&bytes)?;
        Ok(answer["pruned"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Template `name`'s tags: `tag`, `buildID`, `createdAt` each.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown template).
    pub async fn template_tags(&self, name: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        let request = self.api("GET", &format!("/templates/{name}/tags"), None)?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }
}
