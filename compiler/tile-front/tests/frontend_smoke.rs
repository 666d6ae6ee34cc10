//! Quick end-to-end checks of the front end façade.
use tile_front::frontend::{parse_program, SourceFile};

fn load(name: &str) -> SourceFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dsl-examples")
        .join(name);
    SourceFile::load(&path).expect("example exists")
}

#[test]
fn vector_add_specializes() {
    let src = load("vector_add.tile");
    let p = match parse_program(&src) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render(&src)),
    };
    assert_eq!(p.kernel_names(), vec!["vector_add", "vector_add_bf16"]);
    assert_eq!(
        p.meta_params("vector_add"),
        vec![("BLOCK".to_string(), None)]
    );
    let space = p.tune_space("vector_add").expect("tune block");
    assert_eq!(space.key, vec!["n"]);
    for name in p.kernel_names() {
        for cfg in space.configs() {
            let k = match p.specialize(&name, &cfg.meta) {
                Ok(k) => k,
                Err(d) => panic!("{}", d.render(&src)),
            };
            tile_ir::verify(&k).expect("valid TIR");
        }
    }
    let k = p
        .specialize("vector_add", &[("BLOCK".into(), 1024)])
        .expect("ok");
    println!("{}", tile_ir::print_kernel(&k));
}

/// The configurations of kernel `k` (one `BC` meta-parameter) under the
/// tune block `tune`, described; the program must check clean.
fn described_configs(name: &str, tune: &str) -> Vec<String> {
    let src = SourceFile::new(
        name,
        format!(
            "kernel k<const BC: i32>(x: *f32) {{\n\
                 store(x + arange(0, BC), full([BC], 1.0, f32));\n\
             }}\n{tune}\n"
        ),
    );
    let p = match parse_program(&src) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render(&src)),
    };
    assert!(p.check_all().is_empty());
    let configs = p.tune_space("k").expect("tune block").configs();
    configs.iter().map(|c| c.describe()).collect()
}

/// `stages:` multiplies the configurations (last, after warps), `where:`
/// may pair it with the others.
#[test]
fn stages_are_tuned_like_warps() {
    assert_eq!(
        described_configs(
            "stages.tile",
            "tune k { BC: [256, 1024], warps: [4], stages: [2, 3], where: [stages * BC <= 2048] }"
        ),
        [
            "BC=256, warps=4, stages=2",
            "BC=256, warps=4, stages=3",
            "BC=1024, warps=4, stages=2",
        ]
    );
}

/// `ctas:` multiplies the configurations last (after stages), and `where:`
/// may pair it with the others.
#[test]
fn ctas_are_tuned_after_stages() {
    assert_eq!(
        described_configs(
            "ctas.tile",
            "tune k { BC: [256], warps: [1, 4], stages: [2], ctas: [8, 16], where: [ctas * warps <= 32] }"
        ),
        [
            "BC=256, warps=1, stages=2, ctas=8",
            "BC=256, warps=1, stages=2, ctas=16",
            "BC=256, warps=4, stages=2, ctas=8",
        ]
    );
}

/// `where:` keeps the configurations that meet every condition, in the
/// product's order.
#[test]
fn where_pairs_tune_choices() {
    let src = SourceFile::new(
        "where.tile",
        "kernel k<const BC: i32, const N: i32>(x: *f32) {\n\
             store(x + arange(0, BC), full([BC], 1.0, f32));\n\
         }\n\
         tune k { N: [2, 4, 8], BC: [256, 1024], warps: [2, 8], where: [BC == 128 * warps, N * 2 <= 8 || BC == 1024] }\n",
    );
    let p = match parse_program(&src) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render(&src)),
    };
    let configs: Vec<String> = p
        .tune_space("k")
        .expect("tune block")
        .configs()
        .iter()
        .map(|c| c.describe())
        .collect();
    assert_eq!(
        configs,
        [
            "N=2, BC=256, warps=2",
            "N=2, BC=1024, warps=8",
            "N=4, BC=256, warps=2",
            "N=4, BC=1024, warps=8",
            "N=8, BC=1024, warps=8",
        ]
    );
    assert!(p.check_all().is_empty());
}
