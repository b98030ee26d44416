//! Format names: parsing, aliases, printing, and the errors bad names get.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::{Encoding, Format};

#[test]
fn named_formats_and_aliases_parse() {
    let cases: &[(&str, Format)] = &[
        ("e4m3fn", Format::E4M3FN),
        ("FP8_E4M3", Format::E4M3FN),
        ("fp8_e4m3fn", Format::E4M3FN),
        ("float8_e4m3fn", Format::E4M3FN),
        ("e4m3", Format::E4M3),
        ("float8_e4m3", Format::E4M3),
        ("fp8_e5m2", Format::E5M2),
        ("e4m3fnuz", Format::E4M3FNUZ),
        ("fp8_e5m2fnuz", Format::E5M2FNUZ),
        ("fp6_e2m3", Format::E2M3),
        ("e2m3fn", Format::E2M3),
        ("fp6_e3m2", Format::E3M2),
        ("fp4_e2m1", Format::E2M1),
        ("float4_e2m1fn", Format::E2M1),
        ("fp4_e3m0", Format::E3M0),
        ("e8m0", Format::E8M0),
        ("e8m0fnu", Format::E8M0),
        ("int8", Format::INT8),
        ("  Int4 ", Format::INT4),
    ];
    for (name, want) in cases {
        let got: Format = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn fp8_e4m3_prefix_means_the_ocp_nvidia_format() {
    // The rule: `fp8_e4m3` = e4m3fn (OCP/NVIDIA), while bare `e4m3` is ml_dtypes' IEEE-like one.
    assert_eq!("fp8_e4m3".parse::<Format>().unwrap(), Format::E4M3FN);
    assert_eq!("e4m3".parse::<Format>().unwrap(), Format::E4M3);
}

#[test]
fn generic_minifloats() {
    let f: Format = "e5m3_b11_fnuz".parse().unwrap();
    let m = f.as_minifloat().unwrap();
    assert_eq!(
        (m.exp_bits(), m.man_bits(), m.bias(), m.encoding()),
        (5, 3, 11, Encoding::Fnuz)
    );
    // ml_dtypes-style fused suffixes.
    assert_eq!(
        "e4m3b11fnuz".parse::<Format>().unwrap(),
        "e4m3_b11_fnuz".parse::<Format>().unwrap()
    );
    // Default conventions: ieee from 8 bits up, none below; named widths keep their own.
    let e3m4: Format = "e3m4".parse().unwrap();
    assert_eq!(e3m4.as_minifloat().unwrap().encoding(), Encoding::Ieee);
    assert_eq!(e3m4.max_value(), 15.5); // ml_dtypes float8_e3m4 max
    let e2m2: Format = "e2m2".parse().unwrap();
    assert_eq!(e2m2.as_minifloat().unwrap().encoding(), Encoding::Finite);
    // IEEE half and bfloat16 fall out of the generic rule.
    let half: Format = "e5m10".parse().unwrap();
    assert_eq!(half.max_value(), 65504.0);
    assert_eq!(half.bits(), 16);
    let bf16: Format = "e8m7".parse().unwrap();
    assert_eq!(bf16.max_value(), f32::from_bits(0x7F7F_0000));
    // An explicit convention that makes it a named format prints as that name.
    assert_eq!("e4m3_fn".parse::<Format>().unwrap().to_string(), "e4m3fn");
}

#[test]
fn every_ml_dtypes_float_name_parses() {
    // ml_dtypes' type names, as its users write them; the width prefix is checked like fp8_.
    let e = |name: &str| {
        name.parse::<Format>()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let mf = |f: Format| {
        let m = f.as_minifloat().unwrap();
        (m.exp_bits(), m.man_bits(), m.bias(), m.encoding())
    };
    assert_eq!(e("float8_e4m3"), Format::E4M3); // ml_dtypes' IEEE-like one, not fp8_e4m3
    assert_eq!(e("float6_e2m3fn"), Format::E2M3);
    assert_eq!(e("float6_e3m2fn"), Format::E3M2);
    assert_eq!(e("float8_e8m0fnu"), Format::E8M0);
    assert_eq!(e("float8_e3m4"), Format::E3M4);
    assert_eq!(e("float8_e4m3b11fnuz"), Format::E4M3B11FNUZ);
    assert_eq!(mf(e("float8_e3m4")), (3, 4, 3, Encoding::Ieee));
    assert_eq!(e("float8_e3m4").max_value(), 15.5);
    assert_eq!(mf(e("float8_e4m3b11fnuz")), (4, 3, 11, Encoding::Fnuz));
    assert_eq!(e("float8_e4m3b11fnuz").max_value(), 30.0);
    // The 16-bit IEEE floats by their framework names.
    for (name, exp, man, bias) in [
        ("bfloat16", 8, 7, 127),
        ("BF16", 8, 7, 127),
        ("float16", 5, 10, 15),
        ("fp16", 5, 10, 15),
        ("half", 5, 10, 15),
    ] {
        assert_eq!(mf(e(name)), (exp, man, bias, Encoding::Ieee), "{name}");
    }
    assert_eq!(e("bfloat16").to_string(), "e8m7");
    assert_eq!(e("half").to_string(), "e5m10");
}

#[test]
fn misspelt_names_get_a_suggestion() {
    let msg = |name: &str| name.parse::<Format>().unwrap_err().to_string();
    for (name, near) in [
        ("e4m3fm", "e4m3fn"),
        ("E4M3FNUZZ", "e4m3fnuz"),
        ("bfloat61", "bfloat16"),
        ("e2m1fnn", "e2m1fn"),
        ("float8_e5m2fnz", "float8_e5m2fnuz"),
    ] {
        let m = msg(name);
        assert!(
            m.contains(&format!("did you mean `{near}`?")),
            "{name}: {m}"
        );
    }
    // A well-formed eXmY with a bad width, and far-off names, get none.
    for name in ["e9m3", "e4m11", "int", "resnet50"] {
        assert!(!msg(name).contains("did you mean"), "{name}: {}", msg(name));
    }
    assert_eq!(
        lowbit_formats::closest("mxfp5", ["mxfp4", "nvfp4"]),
        Some("mxfp4")
    );
    assert_eq!(lowbit_formats::closest("ab", ["ac"]), None); // too short to guess
}

#[test]
fn display_round_trips() {
    for name in [
        "e4m3fn",
        "e4m3",
        "e5m2",
        "e4m3fnuz",
        "e5m2fnuz",
        "e2m3",
        "e3m2",
        "e2m1",
        "e3m0",
        "e8m0",
        "int8",
        "int8_full",
        "uint4",
        "int2",
        "e3m4",
        "e5m3_b11_fnuz",
        "e2m3_ieee",
        "e2m3_fn",
        "e4m3_b9",
        "e3m3_b-2",
        "e6m1_fn",
        "e1m0",
        "int16",
    ] {
        let f: Format = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(f.to_string(), name, "canonical name of {name}");
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
}

#[test]
fn serde_uses_the_name() {
    let json = serde_json_like(&Format::E2M1);
    assert_eq!(json, "e2m1");
}

fn serde_json_like(f: &Format) -> String {
    // Display is what Serialize writes (collect_str); checked without a JSON dependency.
    f.to_string()
}

#[test]
fn bad_names_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("e0m0", "exponent bits"),
        ("e9m3", "exponent bits"),
        ("e4m11", "mantissa bits"),
        ("int1", "integer formats have 2 to 16 bits"),
        ("int17", "integer formats have 2 to 16 bits"),
        ("uint8_narrow", "not an integer option"),
        ("e4m3_b300", "bias"),
        ("e8m3", "bias"), // ieee e8m3 with the default bias 127 is fine…
        ("e5m2_b-120", "bias"),
        ("fp8_e2m1", "prefix fp8_ says 8 bits"),
        ("e4m3_xyz", "not a format option"),
        ("e5m0_ieee", "needs at least one mantissa bit"),
        ("e4m3_fn_fnuz", "convention is given twice"),
        ("bf8", "expected a named format"),
        (
            "float8_e2m3",
            "prefix float8_ says 8 bits but `e2m3` has 6 bits",
        ),
        ("float16_e5m10", "expected a named format"),
        ("", "empty"),
        ("int", "missing bit width"),
    ];
    for (name, needle) in cases {
        match name.parse::<Format>() {
            Ok(f) if *name == "e8m3" => assert_eq!(f.max_value(), f32::from_bits(0x7F70_0000)),
            Ok(f) => panic!("{name:?} parsed as {f}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{name:?}: {msg}");
                assert!(
                    msg.contains(&format!("`{name}`")) || name.is_empty(),
                    "{name:?}: message names the input: {msg}"
                );
            }
        }
    }
}
