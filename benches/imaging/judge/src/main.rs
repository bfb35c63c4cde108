//! `judge SOURCE OUTPUT...`: the SSIMULACRA2 score of each OUTPUT against SOURCE,
//! one per line, by rust-av's `ssimulacra2` crate (a port of libjxl's tool: within
//! 0.025 of the scores libjxl's tool gives the four JPEGs of fast-ssim2's reference
//! tests, README "Adaptive quality"). Images are PPM files of
//! 8-bit sRGB, decoded by the caller (Pillow, libjpeg-turbo's decode, as the product's
//! own scorer decodes), so every implementation compared sees the same pixels.

use std::process::ExitCode;

use ssimulacra2::{
    ColorPrimaries, LinearRgb, Rgb, TransferCharacteristic, compute_frame_ssimulacra2,
};

/// The image at `path` as linear RGB, what the metric starts from, and its size.
fn linear(path: &str) -> Result<(LinearRgb, (u32, u32)), String> {
    let img = image::open(path)
        .map_err(|e| format!("{path}: {e}"))?
        .to_rgb8();
    let size = img.dimensions();
    let data = img
        .pixels()
        .map(|p| p.0.map(|v| f32::from(v) / 255.0))
        .collect();
    let rgb = Rgb::new(
        data,
        size.0 as usize,
        size.1 as usize,
        TransferCharacteristic::SRGB,
        ColorPrimaries::BT709,
    )
    .map_err(|e| format!("{path}: {e}"))?;
    let linear = LinearRgb::try_from(rgb).map_err(|e| format!("{path}: {e}"))?;
    Ok((linear, size))
}

fn run(args: &[String]) -> Result<(), String> {
    let [source, outputs @ ..] = args else {
        return Err("usage: judge SOURCE.ppm OUTPUT.ppm...".into());
    };
    let (reference, size) = linear(source)?;
    for output in outputs {
        let (distorted, out_size) = linear(output)?;
        if out_size != size {
            return Err(format!(
                "{output}: {out_size:?} against a source of {size:?}"
            ));
        }
        let score = compute_frame_ssimulacra2(reference.clone(), distorted)
            .map_err(|e| format!("{output}: {e}"))?;
        println!("{score:.6}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("judge: {e}");
            ExitCode::FAILURE
        }
    }
}
