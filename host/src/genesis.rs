//! Genesis: how an image comes to be. `batos init` and the first `batos serve` of a missing
//! image both go through [`create_image`]: the file, the genesis objects and methods, the mind
//! if one is asked for, and the tokens beside it. An image that did not finish is taken away, so
//! the next try begins again.

use crate::protocol::Coded;
use std::path::Path;

use crate::access::{AccessError, Tokens};
use crate::image::{Durability, Image, ImageError};
use crate::method::{MethodError, Runtime};
use crate::mind::{self, MindError, MindInfo, MindSpec};
use crate::protocol::{Code, Failure};

/// Why an image could not be made (none is left behind).
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error(transparent)]
    Mind(#[from] MindError),
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl GenesisError {
    pub fn code(&self) -> Code {
        match self {
            GenesisError::Image(e) => e.code(),
            GenesisError::Method(e) => e.code(),
            GenesisError::Mind(e) => e.code(),
            GenesisError::Access(_) => Code::Internal,
        }
    }
}

impl From<GenesisError> for Failure {
    fn from(e: GenesisError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// A new image at `path`: genesis (`object`, `lobby`, `counter`, the genesis methods), the
/// default model imported when `mind` is [`MindSpec::Image`] (`progress` sees its bytes), and
/// the tokens. Answers the image, open, and the mind imported, if any.
pub fn create_image(
    path: &Path,
    durability: Durability,
    methods: &Runtime,
    mind: &MindSpec,
    actor: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Image, Option<MindInfo>), GenesisError> {
    let mut image = Image::create(path, durability)?;
    let made = (|| {
        methods.install_genesis(&mut image)?;
        let info = match mind {
            MindSpec::Image => Some(mind::import_default(&mut image, actor, progress)?),
            MindSpec::None | MindSpec::Scripted(_) | MindSpec::OpenAi(_) => None,
        };
        Tokens::ensure(path)?;
        Ok::<_, GenesisError>(info)
    })();
    match made {
        Ok(info) => Ok((image, info)),
        Err(e) => {
            // Half a genesis is no image: take it away.
            drop(image);
            crate::image::remove_files(path);
            Err(e)
        }
    }
}
