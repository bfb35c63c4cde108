//! Adaptive quality through the API: `quality=auto:N` and `max_bytes`.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, ImageServer, TestServer};

/// Uploads `csv` with `fields`, waits for `Completed`, returns the images.
async fn completed_images(app: &TestServer, csv: &str, fields: &[(&str, &str)]) -> Vec<Value> {
    let id = app.accepted(csv.as_bytes(), fields).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    app.images(&id).await
}

async fn auto_target_and_byte_cap_show_in_the_images_api(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{},{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_lamp_portrait.jpg"),
    );

    // A target alone (two decimals at most): every output reaches it.
    for img in completed_images(&app, &csv, &[("quality", "auto:74.25")]).await {
        let r = &img["report"];
        assert_eq!(r["target"].as_f64(), Some(74.25), "{img}");
        assert!(r["score"].as_f64().unwrap() >= 74.25, "{img}");
        // Photos this small are scored whole.
        assert_eq!(r["scored_pixels"].as_u64(), Some(640 * 480), "{img}");
        assert!(r["tries"].as_u64().unwrap() >= 1, "{img}");
        assert!(
            ["target", "quality_range"].contains(&r["binding"].as_str().unwrap()),
            "{img}"
        );
        let (code, _, jpeg) = app.get_bytes(img["output_url"].as_str().unwrap()).await;
        assert_eq!(code, 200);
        pixbatch::imaging::verify_jpeg(&jpeg).expect("decodes");
    }

    // A cap that forces a lower quality and, for one image, a downscale.
    let capped = [("quality", "auto:90"), ("max_bytes", "12KB")];
    let mut downscaled = 0;
    for img in completed_images(&app, &csv, &capped).await {
        let r = &img["report"];
        assert_eq!(r["max_bytes"], 12000, "{img}");
        assert_eq!(r["binding"], "max_bytes", "{img}");
        // The score, and the pixels it was taken on, go together.
        assert_eq!(r["score"].is_null(), r["scored_pixels"].is_null(), "{img}");
        if r["downscaled"] == true {
            downscaled += 1;
            let (w, h) = (
                img["width"].as_u64().unwrap(),
                img["height"].as_u64().unwrap(),
            );
            assert!(w < 640 && h < 480, "{img}");
        } else {
            // The cap won: the score reached is reported, below the target.
            let score = r["score"].as_f64().expect("a score");
            assert!(score < 90.0, "{img}");
            assert_eq!(r["scored_pixels"].as_u64(), Some(640 * 480), "{img}");
        }
        let (code, _, jpeg) = app.get_bytes(img["output_url"].as_str().unwrap()).await;
        assert_eq!(code, 200);
        assert!(jpeg.len() <= 12_000, "{} bytes", jpeg.len());
        assert_eq!(img["output_bytes"].as_u64(), Some(jpeg.len() as u64));
        pixbatch::imaging::verify_jpeg(&jpeg).expect("decodes");
    }
    assert!(downscaled >= 1, "no image needed a downscale to fit 12 KB");

    // Bad values name the field.
    for (field, value) in [
        ("quality", "auto:0"),
        ("quality", "auto:abc"),
        ("quality", "auto:74.255"),
        ("quality", "auto:700"),
        ("max_bytes", "-1"),
        ("max_bytes", "10"),
    ] {
        let (code, body) = app.upload(csv.as_bytes(), &[(field, value)]).await;
        assert_eq!(code, 422, "{field}={value}: {body}");
        assert!(body.to_string().contains(field), "{body}");
    }
}

crate::on_both_backends!(auto_target_and_byte_cap_show_in_the_images_api);
