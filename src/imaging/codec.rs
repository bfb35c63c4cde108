//! What the codec runs on this machine, found once at run time and said at start.
//!
//! The pixel work (IDCT, FDCT and quantisation, colour conversion, chroma
//! resampling) and the coefficient loops (requantisation, Huffman statistics and
//! coding) are pixbatch's own ([`super::kernels`], [`super::writer`]), in AVX2, SSE2
//! or plain Rust, picked for the CPU when the process starts: the speed no longer
//! depends on how libjpeg was built. libjpeg decodes the entropy-coded data, and
//! decodes to pixels what the kernels do not take (RGB JPEGs, unusual samplings);
//! its own SIMD exists only in a build made with `nasm`, which the probe reports for
//! completeness.

use std::fmt;
use std::sync::OnceLock;

use super::kernels::Level;
use super::libjpeg;

/// The codec's configuration on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    /// The kernels that run: `avx2`, `sse2` or `scalar` (`PIXBATCH_KERNELS` may
    /// lower the choice, for comparisons).
    pub kernels: &'static str,
    /// The best vector extension the CPU has (`avx2`, `sse2`, `neon`, `none`).
    pub cpu: &'static str,
    /// Whether the linked libjpeg has its own SIMD (built with nasm).
    pub libjpeg_simd: bool,
    /// How 4:2:2 / 4:4:0 / 4:4:4 JPEG chroma becomes 4:2:0.
    pub chroma: ChromaRoute,
}

/// See [`Codec::chroma`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChromaRoute {
    /// Box-downsampled in the DCT domain on the coefficient path (no IDCT/FDCT).
    Coefficients,
    /// Decoded to samples, box-averaged, transformed again.
    Planes,
}

impl ChromaRoute {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ChromaRoute::Coefficients => "dct",
            ChromaRoute::Planes => "planes",
        }
    }
}

impl Codec {
    /// Detected once per process.
    pub fn get() -> Codec {
        static CODEC: OnceLock<Codec> = OnceLock::new();
        *CODEC.get_or_init(Codec::detect)
    }

    fn detect() -> Codec {
        Codec {
            kernels: Level::get().as_str(),
            cpu: cpu_level(),
            libjpeg_simd: libjpeg::libjpeg_has_simd(),
            chroma: ChromaRoute::Coefficients,
        }
    }
}

impl fmt::Display for Codec {
    /// `codec: avx2 kernels (cpu avx2), chroma dct; libjpeg decodes entropy only
    /// (built without nasm)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "codec: {} kernels (cpu {}), chroma {}; libjpeg decodes entropy only (built {} nasm)",
            self.kernels,
            self.cpu,
            self.chroma.as_str(),
            if self.libjpeg_simd { "with" } else { "without" },
        )
    }
}

/// The widest vector extension this CPU has, whether or not the kernels use it.
fn cpu_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        Level::detected().as_str()
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_which_kernels_run() {
        let codec = Codec::get();
        assert_eq!(codec.kernels, Level::get().as_str());
        // Without an override the best level the CPU has runs.
        if std::env::var_os("PIXBATCH_KERNELS").is_none() {
            assert_eq!(Level::get(), Level::detected());
            #[cfg(target_arch = "x86_64")]
            assert_eq!(codec.kernels, codec.cpu);
        }
        let said = codec.to_string();
        assert!(
            said.starts_with(&format!("codec: {} kernels", codec.kernels)),
            "{said}"
        );
        assert!(said.contains("nasm"), "{said}");
    }
}
