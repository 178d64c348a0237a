//! Tests of the image-folder reader: PNG colour types and bit depths, JPEG fixtures, label
//! assignment, ordering, resizing, and errors.

use super::*;
use std::fs;

/// Write a PNG with the given colour type / depth; `data` is the raw sample bytes.
fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    ct: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<Vec<u8>>,
) {
    let file = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(ct);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
}

fn gray8(path: &Path, w: u32, h: u32, v: &[u8]) {
    write_png(
        path,
        w,
        h,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        v,
        None,
    );
}

#[test]
fn png_colour_types_and_depths_decode_to_gray() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 8-bit gray 2×1.
    gray8(&d.join("g8.png"), 2, 1, &[0, 255]);
    let g = decode_gray(&d.join("g8.png")).unwrap();
    assert_eq!(
        (g.height, g.width, g.pixels.clone()),
        (1, 2, vec![0.0, 1.0])
    );
    // 16-bit gray: 0x8000 and 0xFFFF.
    write_png(
        &d.join("g16.png"),
        2,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &[0x80, 0x00, 0xFF, 0xFF],
        None,
    );
    let g = decode_gray(&d.join("g16.png")).unwrap();
    assert!(
        (g.pixels[0] - 32768.0 / 65535.0).abs() < 1e-6 && g.pixels[1] == 1.0,
        "{:?}",
        g.pixels
    );
    // RGB 8-bit: pure red, green, blue → BT.601 weights.
    write_png(
        &d.join("rgb.png"),
        3,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &[255, 0, 0, 0, 255, 0, 0, 0, 255],
        None,
    );
    let g = decode_gray(&d.join("rgb.png")).unwrap();
    for (v, want) in g.pixels.iter().zip([0.299, 0.587, 0.114]) {
        assert!((v - want).abs() < 1e-6, "{:?}", g.pixels);
    }
    // RGBA 16-bit, alpha ignored.
    let px: Vec<u8> = [0xFFFFu16, 0xFFFF, 0xFFFF, 0x0000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    write_png(
        &d.join("rgba16.png"),
        1,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        &px,
        None,
    );
    assert!((decode_gray(&d.join("rgba16.png")).unwrap().pixels[0] - 1.0).abs() < 1e-6);
    // Gray+alpha 8-bit.
    write_png(
        &d.join("ga.png"),
        1,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        &[51, 0],
        None,
    );
    assert!((decode_gray(&d.join("ga.png")).unwrap().pixels[0] - 0.2).abs() < 1e-6);
    // 4-bit palette: indices 0 (black) and 1 (red), packed two per byte.
    let pal = vec![0, 0, 0, 255, 0, 0];
    write_png(
        &d.join("pal.png"),
        2,
        1,
        png::ColorType::Indexed,
        png::BitDepth::Four,
        &[0x10], // pixel 0 → index 1, pixel 1 → index 0
        Some(pal),
    );
    let g = decode_gray(&d.join("pal.png")).unwrap();
    assert!(
        (g.pixels[0] - 0.299).abs() < 1e-6 && g.pixels[1].abs() < 1e-6,
        "{:?}",
        g.pixels
    );
    // 1-bit gray expands to 0/1.
    write_png(
        &d.join("g1.png"),
        8,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::One,
        &[0b1010_0000],
        None,
    );
    let g = decode_gray(&d.join("g1.png")).unwrap();
    assert_eq!(g.pixels, vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[derive(serde::Deserialize)]
struct JpegMeta {
    gray: GrayMeta,
    rgb: RgbMeta,
}
#[derive(serde::Deserialize)]
struct GrayMeta {
    width: usize,
    height: usize,
    left: u8,
    right: u8,
}
#[derive(serde::Deserialize)]
struct RgbMeta {
    width: usize,
    height: usize,
    rgb: [u8; 3],
}

#[test]
fn jpeg_fixtures_decode() {
    // Fixtures from scripts/fixtures/jpeg_folder.py (Pillow, quality 95).
    let meta: JpegMeta =
        serde_yaml_ng::from_str(include_str!("../../../tests/golden/jpeg_folder/meta.json"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (gp, rp) = (dir.path().join("gray.jpg"), dir.path().join("rgb.JPEG"));
    fs::write(
        &gp,
        include_bytes!("../../../tests/golden/jpeg_folder/gray.jpg"),
    )
    .unwrap();
    fs::write(
        &rp,
        include_bytes!("../../../tests/golden/jpeg_folder/rgb.jpg"),
    )
    .unwrap();
    let tol = 3.0 / 255.0;
    let g = decode_gray(&gp).unwrap();
    assert_eq!((g.height, g.width), (meta.gray.height, meta.gray.width));
    for r in 0..g.height {
        for c in 0..g.width {
            let want = if c < g.width / 2 {
                meta.gray.left
            } else {
                meta.gray.right
            } as f32
                / 255.0;
            assert!((g.pixels[r * g.width + c] - want).abs() < tol, "({r},{c})");
        }
    }
    let g = decode_gray(&rp).unwrap();
    assert_eq!((g.height, g.width), (meta.rgb.height, meta.rgb.width));
    let [r, gg, b] = meta.rgb.rgb.map(|v| v as f32 / 255.0);
    let want = luma(r, gg, b);
    assert!(
        g.pixels.iter().all(|v| (v - want).abs() < tol),
        "{:?} vs {want}",
        &g.pixels[..4]
    );
}

fn build_tree(root: &Path) {
    // Classes "10" and "2": integer names → labels 10 and 2 (numeric order, not lexicographic).
    for (class, vals) in [
        ("2", [[10u8, 20, 30, 40], [0, 0, 0, 0]]),
        ("10", [[255, 255, 0, 0], [1, 2, 3, 4]]),
    ] {
        let dir = root.join(class);
        fs::create_dir_all(&dir).unwrap();
        // Names chosen so that name order differs from creation order.
        gray8(&dir.join("b.png"), 2, 2, &vals[0]);
        gray8(&dir.join("a.PNG"), 2, 2, &vals[1]);
    }
    fs::write(root.join("2").join("notes.txt"), "ignored").unwrap();
}

#[test]
fn folder_labels_order_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let ds = read_folder(dir.path(), 2, 2).unwrap();
    assert_eq!(ds.labels, vec![2, 2, 10, 10]);
    assert_eq!(ds.num_classes, 11);
    // Within class 2: a.PNG (zeros) before b.png.
    assert_eq!(ds.images.row(0).to_vec(), vec![0.0; 4]);
    assert!((ds.images[[1, 3]] - 40.0 / 255.0).abs() < 1e-6);
    // Downscale to 1×1 averages the 2×2 image.
    let small = read_folder(dir.path(), 1, 1).unwrap();
    assert!((small.images[[1, 0]] - 25.0 / 255.0).abs() < 1e-6);
    assert!((small.images[[3, 0]] - 127.5 / 255.0).abs() < 1e-6);
    // Different input sizes in one folder all come out at the requested size.
    gray8(&dir.path().join("2").join("c.png"), 5, 3, &[128; 15]);
    let mixed = read_folder(dir.path(), 4, 4).unwrap();
    assert_eq!(mixed.images.dim(), (5, 16));
    assert!(mixed
        .images
        .row(2)
        .iter()
        .all(|v| (v - 128.0 / 255.0).abs() < 1e-6));
}

#[test]
fn non_integer_folder_names_use_sorted_index() {
    let dir = tempfile::tempdir().unwrap();
    for (class, v) in [("zeta", 200u8), ("alpha", 100)] {
        fs::create_dir_all(dir.path().join(class)).unwrap();
        gray8(&dir.path().join(class).join("x.png"), 1, 1, &[v]);
    }
    let ds = read_folder(dir.path(), 1, 1).unwrap();
    assert_eq!(ds.labels, vec![0, 1]);
    assert!((ds.images[[0, 0]] - 100.0 / 255.0).abs() < 1e-6);
    assert!(
        ds.source.contains("0=alpha") && ds.source.contains("1=zeta"),
        "{}",
        ds.source
    );
}

#[test]
fn folder_errors_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-root");
    let msg = read_folder(&missing, 28, 28).unwrap_err().to_string();
    assert!(
        msg.contains("no-such-root") && msg.contains("data.root"),
        "{msg}"
    );

    let empty_root = dir.path().join("empty-root");
    fs::create_dir_all(&empty_root).unwrap();
    let msg = read_folder(&empty_root, 28, 28).unwrap_err().to_string();
    assert!(
        msg.contains("empty-root") && msg.contains("no class folders"),
        "{msg}"
    );

    let root = dir.path().join("tree");
    build_tree(&root);
    fs::create_dir_all(root.join("7")).unwrap();
    fs::write(root.join("7").join("readme.txt"), "not an image").unwrap();
    let msg = read_folder(&root, 28, 28).unwrap_err().to_string();
    assert!(
        msg.contains(&root.join("7").display().to_string()) && msg.contains("no .png"),
        "{msg}"
    );
    fs::remove_dir_all(root.join("7")).unwrap();

    fs::write(
        root.join("10").join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let msg = read_folder(&root, 28, 28).unwrap_err().to_string();
    assert!(msg.contains("broken.png") && msg.contains("PNG"), "{msg}");
    fs::write(root.join("10").join("broken.png"), b"plain text").unwrap();
    let msg = read_folder(&root, 28, 28).unwrap_err().to_string();
    assert!(
        msg.contains("broken.png") && msg.contains("not a PNG or JPEG"),
        "{msg}"
    );
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn oversized_headers_are_rejected_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // A PNG header claiming 20000×20000 RGBA16 (3.2 GB decoded) with no pixel data.
    let p = dir.path().join("huge.png");
    let file = fs::File::create(&p).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 20000, 20000);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut wr = enc.write_header().unwrap();
    // One small IDAT chunk, so the file gets past `read_info` like a real image would.
    wr.write_chunk(png::chunk::IDAT, &zlib(&[0; 64])).unwrap();
    drop(wr);
    let msg = decode_gray(&p).unwrap_err().to_string();
    assert!(
        msg.contains("huge.png") && msg.contains("20000×20000") && msg.contains("limit"),
        "{msg}"
    );
    // The gray JPEG fixture with its frame header (SOF0) patched to 30000×20000.
    let mut jpg = include_bytes!("../../../tests/golden/jpeg_folder/gray.jpg").to_vec();
    let sof = jpg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline fixture");
    jpg[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x4E, 0x20]);
    let p = dir.path().join("huge.jpg");
    fs::write(&p, &jpg).unwrap();
    let msg = decode_gray(&p).unwrap_err().to_string();
    assert!(
        msg.contains("huge.jpg") && msg.contains("20000×30000"),
        "{msg}"
    );
    // At the limit's side length an image still passes the header check.
    assert!(limits::check_image_size(&p, 8192, 8192).is_ok());
}

#[test]
fn checked_reader_applies_data_classes_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let lim = |classes, available| Checks {
        classes,
        available,
        fix: "the fix",
    };
    // Labels 2 and 10: fine with 11 classes, folder `10` is outside 10.
    assert!(read_folder_checked(dir.path(), 2, 2, &lim(Some(11), None)).is_ok());
    let msg = read_folder_checked(dir.path(), 2, 2, &lim(Some(10), None))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`10`") && msg.contains("data.classes"),
        "{msg}"
    );
    // 4 images of 2×2 f32 = 64 bytes, twice = 128 bytes.
    assert!(read_folder_checked(dir.path(), 2, 2, &lim(None, Some(128))).is_ok());
    let msg = read_folder_checked(dir.path(), 2, 2, &lim(None, Some(127)))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("4 images") && msg.contains("the fix"), "{msg}");
}

/// The folder fingerprint computed independently of the crate: walk `root` with `std::fs`
/// (integer class names in numeric order, else by name; `.png/.jpg/.jpeg` files by name),
/// build the documented preimage in one buffer and hash it with `sha2` directly.
fn reference_folder_id(root: &Path) -> (String, usize, u64) {
    use sha2::{Digest, Sha256};
    let mut classes: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    if classes.iter().all(|n| n.parse::<u64>().is_ok()) {
        classes.sort_by_key(|n| n.parse::<u64>().unwrap());
    } else {
        classes.sort();
    }
    let mut pre = b"diffnmf-data-v1\0folder\0".to_vec();
    let (mut files, mut bytes) = (0, 0);
    for class in &classes {
        let mut names: Vec<String> = fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| {
                let l = n.to_ascii_lowercase();
                l.ends_with(".png") || l.ends_with(".jpg") || l.ends_with(".jpeg")
            })
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{class}/{name}");
            let data = fs::read(root.join(class).join(&name)).unwrap();
            pre.extend_from_slice(&(rel.len() as u64).to_le_bytes());
            pre.extend_from_slice(rel.as_bytes());
            pre.extend_from_slice(&(data.len() as u64).to_le_bytes());
            pre.extend_from_slice(&Sha256::digest(&data));
            files += 1;
            bytes += data.len() as u64;
        }
    }
    let hex: String = Sha256::digest(&pre)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("folder:{hex}"), files, bytes)
}

/// `fingerprint()` and the loader's `content` of `root`, after checking they agree with
/// each other and with the reference.
fn folder_id(root: &Path) -> String {
    use crate::data::{fingerprint, DataSource};
    let fp = fingerprint(&DataSource::Folder {
        root: root.to_path_buf(),
    })
    .unwrap();
    let (want, files, bytes) = reference_folder_id(root);
    assert_eq!(fp.id, want);
    assert_eq!((fp.files, fp.bytes), (files, bytes));
    assert_eq!(read_folder(root, 3, 3).unwrap().content, fp);
    fp.id
}

#[test]
fn folder_fingerprint_matches_reference_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("digits");
    build_tree(&root);
    // A JPEG next to the PNGs and a mixed-case extension are part of the listing too.
    fs::write(
        root.join("10").join("c.Jpeg"),
        include_bytes!("../../../tests/golden/jpeg_folder/gray.jpg"),
    )
    .unwrap();
    let id = folder_id(&root);
    assert!(id.starts_with("folder:") && id.len() == 7 + 64, "{id}");
    let fp =
        crate::data::fingerprint(&crate::data::DataSource::Folder { root: root.clone() }).unwrap();
    assert_eq!(fp.files, 5);
    assert_eq!(fp.short(), id[..7 + 12]);
    // Through `load`, at another size and with the label check, the content is the same.
    let src = crate::data::DataSource::Folder { root: root.clone() };
    assert_eq!(crate::data::load(&src, 5, 4).unwrap().content, fp);
    assert_eq!(
        crate::data::load_checked(&src, 2, 2, Some(11))
            .unwrap()
            .content,
        fp
    );
}

#[test]
fn folder_fingerprint_tracks_content_not_location() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("first");
    build_tree(&root);
    let id = folder_id(&root);

    // Moving / renaming the root keeps the id.
    let moved = dir.path().join("elsewhere").join("second");
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::rename(&root, &moved).unwrap();
    assert_eq!(folder_id(&moved), id);
    let root = moved;

    // Files the loader ignores do not change it.
    fs::write(root.join("10").join("notes.txt"), "more notes").unwrap();
    fs::write(root.join("README.md"), "top-level notes").unwrap();
    fs::create_dir_all(root.join(".cache")).unwrap();
    fs::write(root.join(".cache").join("x.png"), "hidden folder").unwrap();
    assert_eq!(folder_id(&root), id);

    // One pixel of one image rewritten in place (same size) changes it.
    let b = root.join("2").join("b.png");
    let before = fs::metadata(&b).unwrap().len();
    gray8(&b, 2, 2, &[10, 20, 30, 41]);
    assert_eq!(fs::metadata(&b).unwrap().len(), before, "same file size");
    let changed = folder_id(&root);
    assert_ne!(changed, id);
    gray8(&b, 2, 2, &[10, 20, 30, 40]);
    assert_eq!(folder_id(&root), id, "restoring the pixel restores the id");

    // Renaming a class folder changes it (the labels come from folder names).
    fs::rename(root.join("2"), root.join("3")).unwrap();
    assert_ne!(folder_id(&root), id);
    fs::rename(root.join("3"), root.join("2")).unwrap();
    assert_eq!(folder_id(&root), id);

    // Renaming an image changes it; so does adding one.
    fs::rename(root.join("2").join("b.png"), root.join("2").join("bb.png")).unwrap();
    assert_ne!(folder_id(&root), id);
    fs::rename(root.join("2").join("bb.png"), root.join("2").join("b.png")).unwrap();
    gray8(&root.join("2").join("c.png"), 1, 1, &[7]);
    assert_ne!(folder_id(&root), id);
}

#[test]
fn loader_and_fingerprint_share_one_listing() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let listing = list_images(dir.path(), None).unwrap();
    let rels: Vec<(&str, u8)> = listing
        .files
        .iter()
        .map(|f| (f.rel.as_str(), f.label))
        .collect();
    assert_eq!(
        rels,
        [
            ("2/a.PNG", 2),
            ("2/b.png", 2),
            ("10/a.PNG", 10),
            ("10/b.png", 10)
        ]
    );
    let ds = read_folder(dir.path(), 2, 2).unwrap();
    assert_eq!(
        ds.labels,
        listing.files.iter().map(|f| f.label).collect::<Vec<_>>()
    );
    // The label check of `data.classes` is part of the listing.
    let msg = list_images(dir.path(), Some(10)).unwrap_err().to_string();
    assert!(msg.contains("data.classes"), "{msg}");
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_are_an_error_naming_the_file() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let bad = dir.path().join("2").join(OsStr::from_bytes(b"bad\xff.png"));
    if fs::write(&bad, b"x").is_err() {
        return; // the file system refuses non-UTF-8 names: nothing to test
    }
    let src = crate::data::DataSource::Folder {
        root: dir.path().to_path_buf(),
    };
    for msg in [
        crate::data::fingerprint(&src).unwrap_err().to_string(),
        read_folder(dir.path(), 2, 2).unwrap_err().to_string(),
    ] {
        assert!(
            msg.contains("bad\u{FFFD}.png") && msg.contains("UTF-8"),
            "{msg}"
        );
    }
}

#[test]
fn decode_gray_bytes_matches_decode_gray() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.png");
    gray8(&p, 3, 1, &[0, 128, 255]);
    let a = decode_gray(&p).unwrap();
    let b = decode_gray_bytes(&fs::read(&p).unwrap(), &p).unwrap();
    assert_eq!((a.height, a.width, a.pixels), (b.height, b.width, b.pixels));
    let msg = decode_gray_bytes(b"plain", &p).unwrap_err().to_string();
    assert!(msg.contains("g.png") && msg.contains("not a PNG"), "{msg}");
}
