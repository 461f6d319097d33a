//! Image preparation equal to Pillow / torchvision / timm, to the bit.

use std::path::{Path, PathBuf};

use ijepa_train::data::{decode_rgb, image_files, resize, EvalTransform, Filter};
use safetensors::SafeTensors;

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `tests/fixtures/resize_expected.safetensors`: Pillow 13's `Image.resize`
/// (both pass orders, shrinking, enlarging and mixed).
#[test]
fn resize_is_bit_exact_with_pillow() {
    let bytes = std::fs::read(here("tests/fixtures/resize_expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let src = st.tensor("source").unwrap();
    let (h, w) = (src.shape()[0] as u32, src.shape()[1] as u32);
    let source = image::RgbImage::from_raw(w, h, src.data().to_vec()).unwrap();
    let mut checked = 0;
    for (name, view) in st.tensors() {
        let Some((filter, size)) = name.split_once('_') else {
            continue;
        };
        let filter = Filter::from_name(filter).unwrap();
        let (rw, rh) = size.split_once('x').unwrap();
        let ours = resize(&source, rw.parse().unwrap(), rh.parse().unwrap(), filter);
        let diff = ours
            .as_raw()
            .iter()
            .zip(view.data())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from Pillow");
        assert_eq!(ours.as_raw().len(), view.data().len());
        checked += 1;
    }
    assert_eq!(checked, 2 * 9);
}

/// timm's evaluation transform on the PNGs of ijepa-cli's embed fixture.
#[test]
fn eval_transform_equals_timm() {
    let fixtures = here("../ijepa-cli/tests/fixtures");
    let bytes = std::fs::read(fixtures.join("embed_expected.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let order: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["images"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let inputs: Vec<f32> = st
        .tensor("inputs")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let root = fixtures.join("embed_images");
    let (files, notes) = image_files(&root).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, order, "image order");
    let t = EvalTransform::new(
        (56, 56),
        0.9,
        false,
        Filter::Bicubic,
        [0.485, 0.456, 0.406],
        [0.229, 0.224, 0.225],
    )
    .unwrap();
    for (i, path) in files.iter().enumerate() {
        let ours = t.apply(&decode_rgb(path).unwrap());
        let reference = &inputs[i * ours.len()..(i + 1) * ours.len()];
        let err = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-6, "{}: max |Δ| = {err}", path.display());
    }
}

#[test]
fn bad_transform_settings_are_refused() {
    let t =
        |size, crop, std| EvalTransform::new(size, crop, false, Filter::Bilinear, [0.5; 3], std);
    assert!(t((0, 4), 1.0, [1.0; 3])
        .unwrap_err()
        .to_string()
        .contains("(0, 4)"));
    assert!(t((4, 4), 1.5, [1.0; 3])
        .unwrap_err()
        .to_string()
        .contains("crop_pct 1.5"));
    assert!(t((4, 4), 1.0, [1.0, 0.0, 1.0])
        .unwrap_err()
        .to_string()
        .contains("std"));
}

#[test]
fn an_explicit_resize_is_the_crop_pct_it_implies_and_is_described() {
    let t = |crop| {
        EvalTransform::new(
            (224, 224),
            crop,
            false,
            Filter::Bicubic,
            [0.5; 3],
            [0.25; 3],
        )
        .unwrap()
    };
    let img = image::RgbImage::from_fn(300, 240, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    // ⌊224 / 0.875⌋ = 256: the same steps, the same pixels.
    let resized = t(1.0).with_resize(256).unwrap();
    assert_eq!(resized.apply(&img), t(0.875).apply(&img));
    assert_eq!(
        resized.describe(),
        "resize the shorter side to 256 (bicubic), centre crop 224×224 (crop_pct 0.8750), \
         mean [0.5, 0.5, 0.5] std [0.25, 0.25, 0.25]"
    );
    assert!(t(1.0)
        .describe()
        .starts_with("resize the shorter side to 224 "));
    assert!(t(1.0).with_resize(0).is_err());
}
