//! Models by Hugging Face repository and file name (feature `hf-hub`): downloaded once into the standard
//! Hugging Face cache with the `hf-hub` crate, then reused from it without a request.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::{LlamaModel, LlamaModelBuilder};
use crate::{Error, Result};

/// How far a download has come, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadProgress {
    /// Bytes written so far.
    pub done: u64,
    /// The file's size in bytes.
    pub total: u64,
}

/// A file of a Hugging Face model repository, in the local Hugging Face cache or to be downloaded into it.
///
/// The cache is the one the Python `huggingface_hub` and other Rust crates use: `$HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`. The server is `$HF_ENDPOINT`, or `https://huggingface.co`. A file already
/// in the cache is used without any request.
///
/// ```no_run
/// use slm_agents::model::{HfFile, LlamaModel};
///
/// let path = HfFile::new("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf")
///     .download(|p| eprint!("\r{} / {} bytes", p.done, p.total))?;
/// let model = LlamaModel::builder(path).load()?;
/// # Ok::<(), slm_agents::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HfFile {
    repo: String,
    file: String,
    revision: Option<String>,
    endpoint: Option<String>,
    cache_dir: Option<PathBuf>,
    token: Option<String>,
}

impl HfFile {
    /// The file `file` of the model repository `repo` (`owner/name`), at its `main` revision.
    pub fn new(repo: impl Into<String>, file: impl Into<String>) -> Self {
        Self { repo: repo.into(), file: file.into(), revision: None, endpoint: None, cache_dir: None, token: None }
    }

    /// A revision: a branch, tag or commit (default `main`).
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    /// The server (default `$HF_ENDPOINT`, else `https://huggingface.co`): a mirror, or a test server.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The cache directory (default `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// An access token, for gated or private repositories (default: the cache's `token` file, if any).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }

    fn repo(&self) -> Repo {
        match &self.revision {
            Some(r) => Repo::with_revision(self.repo.clone(), RepoType::Model, r.clone()),
            None => Repo::new(self.repo.clone(), RepoType::Model),
        }
    }

    /// The file's path in the cache, if it is there.
    pub fn cached(&self) -> Option<PathBuf> {
        self.cache().repo(self.repo()).get(&self.file)
    }

    /// The file's path: from the cache if it is there (no request), else downloaded into it, with
    /// `progress` called as bytes arrive.
    ///
    /// # Errors
    /// [`Error::Download`] when the server cannot be reached, answers with an error (a repository or file
    /// that does not exist, a gated one without a token) or the cache cannot be written.
    pub fn download(&self, progress: impl FnMut(DownloadProgress)) -> Result<PathBuf> {
        if let Some(path) = self.cached() {
            tracing::debug!(repo = %self.repo, file = %self.file, path = %path.display(), "from the cache");
            return Ok(path);
        }
        let failed = |reason: String| Error::Download { repo: self.repo.clone(), file: self.file.clone(), reason };
        let mut builder = ApiBuilder::from_cache(self.cache()).with_progress(false);
        if let Some(url) = self.endpoint.clone().or_else(|| std::env::var("HF_ENDPOINT").ok()) {
            builder = builder.with_endpoint(url.trim_end_matches('/').to_owned());
        }
        if let Some(token) = &self.token {
            builder = builder.with_token(Some(token.clone()));
        }
        let api = builder.build().map_err(|e| failed(e.to_string()))?;
        tracing::info!(repo = %self.repo, file = %self.file, "downloading");
        api.repo(self.repo())
            .download_with_progress(&self.file, Reporter { progress, done: 0, total: 0 })
            .map_err(|e| failed(e.to_string()))
    }
}

/// hf-hub's progress callbacks, as [`DownloadProgress`] values.
struct Reporter<F> {
    progress: F,
    done: u64,
    total: u64,
}

impl<F: FnMut(DownloadProgress)> hf_hub::api::Progress for Reporter<F> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        (self.progress)(DownloadProgress { done: 0, total: self.total });
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        (self.progress)(DownloadProgress { done: self.done, total: self.total });
    }

    fn finish(&mut self) {}
}

impl LlamaModel {
    /// A builder for the GGUF file `file` of the Hugging Face model repository `repo`, downloaded into the
    /// Hugging Face cache first unless it is there already ([`HfFile`] for a revision, a mirror, a token or a
    /// progress callback). Feature `hf-hub`.
    ///
    /// ```no_run
    /// use slm_agents::model::LlamaModel;
    ///
    /// let model = LlamaModel::from_hf("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf")?
    ///     .threads(2)
    ///     .load()?;
    /// # Ok::<(), slm_agents::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Download`], as [`HfFile::download`].
    pub fn from_hf(repo: &str, file: &str) -> Result<LlamaModelBuilder> {
        HfFile::new(repo, file).download(|_| {}).map(LlamaModel::builder)
    }
}
