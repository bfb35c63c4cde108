//! What the codec runs on this machine, found once at run time and said at start.
//!
//! libjpeg's SIMD kernels (IDCT, FDCT, colour conversion, resampling, Huffman
//! encoding) exist only in a build made with `nasm` on PATH; without it the same
//! binary runs libjpeg's plain C code, which nothing else would reveal. The route
//! for 4:2:2, 4:4:0 and 4:4:4 JPEG sources follows from it (measured on the corpus'
//! ten such photos, one thread, q50, `benches/imaging/run.sh`):
//!
//! | libjpeg build | plane route (IDCT → box filter → FDCT) | chroma in the DCT domain |
//! |---|---:|---:|
//! | with SIMD (nasm) | 1.26× Pillow | 1.13× Pillow |
//! | plain C (no nasm) | 0.66× Pillow | 1.07× Pillow |
//!
//! so with SIMD those sources take libjpeg's planes, without it the coefficient
//! path ([`super::fastpath`], which leaves libjpeg only the entropy coding) also
//! takes them. Both routes write the same kind of file (baseline 4:2:0, standard
//! tables); the DCT-domain one is also about 11 % smaller at the same PSNR.

use std::fmt;
use std::sync::OnceLock;

use super::libjpeg;

/// The codec's configuration on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    /// libjpeg's kernels: `avx2`, `sse2` or `neon` when built with SIMD and the
    /// CPU runs them, `scalar` for the plain C build.
    pub kernels: &'static str,
    /// The best vector extension the CPU has (`avx2`, `sse2`, `neon`, `none`),
    /// whether or not libjpeg uses it.
    pub cpu: &'static str,
    /// How 4:2:2 / 4:4:0 / 4:4:4 JPEG chroma becomes 4:2:0.
    pub chroma: ChromaRoute,
}

/// See [`Codec::chroma`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChromaRoute {
    /// Box-downsampled in the DCT domain on the coefficient path (no IDCT/FDCT).
    Coefficients,
    /// Decoded to libjpeg's planes, box-averaged, encoded again.
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
        let cpu = cpu_level();
        let simd = libjpeg::libjpeg_has_simd();
        Codec {
            kernels: if simd { cpu } else { "scalar" },
            cpu,
            chroma: if simd {
                ChromaRoute::Planes
            } else {
                ChromaRoute::Coefficients
            },
        }
    }
}

impl fmt::Display for Codec {
    /// `codec: avx2 (libjpeg SIMD), chroma planes`, or for the plain C build
    /// `codec: scalar (libjpeg built without nasm; cpu has avx2), chroma dct`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kernels == "scalar" {
            write!(
                f,
                "codec: scalar (libjpeg built without nasm; cpu has {}), chroma {}",
                self.cpu,
                self.chroma.as_str()
            )
        } else {
            write!(
                f,
                "codec: {} (libjpeg SIMD), chroma {}",
                self.kernels,
                self.chroma.as_str()
            )
        }
    }
}

/// The widest vector extension libjpeg-turbo's kernels could use here.
fn cpu_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "sse2"
        }
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
    fn the_route_follows_libjpegs_build() {
        let codec = Codec::get();
        let simd = libjpeg::libjpeg_has_simd();
        assert_eq!(codec.kernels == "scalar", !simd);
        assert_eq!(codec.chroma == ChromaRoute::Coefficients, !simd);
        let said = codec.to_string();
        assert!(
            said.starts_with(&format!("codec: {}", codec.kernels)),
            "{said}"
        );
        // The stub build must say so: that is the point of probing.
        if !simd {
            assert!(said.contains("without nasm"), "{said}");
        }
    }
}
