//! Tests of `pprof`.

use super::*;

#[test]
fn round_trips_through_gzip() {
    let stacks = vec![
        (
            "work".to_string(),
            vec![
                ("main".to_string(), "/bin/w".to_string()),
                ("hot".to_string(), "/bin/w".to_string()),
            ],
            7,
        ),
        (
            "work".to_string(),
            vec![
                ("main".to_string(), "/bin/w".to_string()),
                ("lib_hot".to_string(), "/lib/l.so".to_string()),
            ],
            3,
        ),
    ];
    let mut gz = Vec::new();
    write_gzipped(&mut gz, &stacks, 99, 1_000_000_000).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let back = decode(&gz).unwrap();
    assert_eq!(
        back,
        vec![
            (vec!["work".to_string(), "main".into(), "hot".into()], 7),
            (vec!["work".to_string(), "main".into(), "lib_hot".into()], 3)
        ]
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode(&[0x1f, 0x8b, 1, 2, 3]).is_err());
    let mut rng = crate::rng::Rng::new(0x1234_5678);
    for n in 0..20000 {
        let v: Vec<u8> = (0..(n % 64)).map(|_| rng.next_u64() as u8).collect();
        let _ = decode(&v);
    }
}

#[test]
fn zeros_are_refused_at_the_first_byte_even_compressed() {
    let e = decode_from(std::io::repeat(0), 1 << 30).unwrap_err();
    assert_eq!(e, "malformed protobuf: field number 0 at byte 0");
    // 1 GiB of zeros, gzipped, read as a stream: ends at once
    struct Zeros(u64);
    impl Read for Zeros {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = (b.len() as u64).min(self.0) as usize;
            b[..n].fill(0);
            self.0 -= n as u64;
            Ok(n)
        }
    }
    let mut gz = flate2::read::GzEncoder::new(Zeros(1 << 30), flate2::Compression::fast());
    let mut head = vec![0u8; 64 << 10];
    gz.read_exact(&mut head).unwrap();
    let e = decode_from(std::io::Cursor::new(head).chain(gz), 1 << 30).unwrap_err();
    assert_eq!(e, "malformed protobuf: field number 0 at byte 0");
}

#[test]
fn input_and_decoded_stacks_are_capped() {
    let big = vec![(
        "w".to_string(),
        vec![("f".repeat(100_000), "/bin/w".to_string())],
        1,
    )];
    let raw = encode(&big, 99, 1);
    assert!(decode_from(&raw[..], 4 * raw.len() as u64).is_ok());
    let e = decode_from(&raw[..], raw.len() as u64 - 1).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "more than {} bytes (after decompression); raise --max-input BYTES",
            raw.len() - 1
        )),
        "{e}"
    );
    // a few bytes of sample naming a long stack: the stacks are charged
    let one = (
        "w".to_string(),
        vec![("f".repeat(1000), "/bin/w".to_string())],
        1,
    );
    let many = vec![one; 10_000];
    let raw = encode(&many, 99, 1);
    assert!(raw.len() < 1 << 20);
    let e = decode_from(&raw[..], 1 << 20).unwrap_err();
    assert!(
        e.starts_with(
            "its decoded stacks would take more than 4194304 bytes (4 times --max-input)"
        ),
        "{e}"
    );
    // a length beyond the cap is refused before any read; one within
    // it but beyond the data is truncation, not an allocation
    let e = decode_from(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..], 1 << 30).unwrap_err();
    assert!(
        e.starts_with("a field of 4294967295 bytes at byte 0 runs past 1073741824 bytes"),
        "{e}"
    );
    let e = decode_from(&[0x12, 0xff, 0xff, 0x0f][..], 1 << 30).unwrap_err();
    assert!(e.starts_with("truncated protobuf field"), "{e}");
}
