//! TIR verifier. Placeholder until the front end lands.
use super::Kernel;

#[derive(Debug, thiserror::Error)]
#[error("invalid TIR in kernel `{kernel}`: {message}")]
pub struct VerifyError {
    pub kernel: String,
    pub message: String,
}

/// Check the invariants listed in the module doc.
pub fn verify(_kernel: &Kernel) -> Result<(), VerifyError> {
    Ok(())
}
