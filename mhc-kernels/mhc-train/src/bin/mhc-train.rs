//! `mhc-train`: train the byte-level GPT with a plain, hc or mHC residual, or
//! plot runs. See docs/TRAINER.md.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use mhc_train::train::config::{
    AttentionBackward, MlpGemm, ModelConfig, Precision, ResidualMode, TrainConfig,
};
use mhc_train::train::run::{self, CollectiveChoice, DeviceChoice, Options};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "mhc-train",
    version,
    about = "Train a byte-level GPT with plain, hc or mHC residual connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
enum Command {
    /// Train (or, with --resume, continue) a run.
    Train(TrainArgs),
    /// Plot loss, gradient norm and Amax gain of one or several runs side by side.
    Plot {
        /// Run directories (each with a metrics.jsonl).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write compare.png and compare.svg.
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
    },
}

/// A named model size with its usual training settings; flags given on the
/// command line override it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// 86 M parameters: 12 layers × width 768, 12 heads, context 1024,
    /// batch 8, lr 6e-4 → 6e-5, warm-up 30 (docs/TRAINER.md's figures).
    Gpt86m,
    /// 1.2 B parameters: 24 layers × width 2048, 16 heads (of 128), context
    /// 1024, batch 16, lr 3e-4 → 3e-5, warm-up 30, and for hc/mhc
    /// `--recompute 0`: one H200 (docs/TRAINER.md).
    Gpt1b,
}

impl Preset {
    /// (flag, value) pairs, as they would be typed.
    fn flags(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Preset::Gpt86m => &[
                ("layers", "12"),
                ("width", "768"),
                ("heads", "12"),
                ("context", "1024"),
                ("batch", "8"),
                ("lr", "6e-4"),
                ("min_lr", "6e-5"),
                ("warmup", "30"),
            ],
            Preset::Gpt1b => &[
                ("layers", "24"),
                ("width", "2048"),
                ("heads", "16"),
                ("context", "1024"),
                ("batch", "16"),
                ("lr", "3e-4"),
                ("min_lr", "3e-5"),
                ("warmup", "30"),
            ],
        }
    }

    /// `args` with this preset's values wherever `matches` says the flag
    /// was not on the command line.
    fn apply(self, args: &mut TrainArgs, matches: &ArgMatches) {
        for &(flag, value) in self.flags() {
            if matches.value_source(flag) == Some(ValueSource::CommandLine) {
                continue;
            }
            let parse = |v: &str| v.parse::<f64>().expect("a preset value is a number");
            let v = parse(value);
            match flag {
                "layers" => args.layers = v as usize,
                "width" => args.width = v as usize,
                "heads" => args.heads = v as usize,
                "context" => args.context = v as usize,
                "batch" => args.batch = v as usize,
                "lr" => args.lr = v as f32,
                "min_lr" => args.min_lr = v as f32,
                "warmup" => args.warmup = v as u64,
                _ => unreachable!("preset flag {flag}"),
            }
        }
        // At 1 B, hc and mhc recompute their streams in blocks: without it
        // the plan (74 GB at batch 16) left too little of the H200's 141 GB
        // for the allocator's fragmentation (one hc run ran out of memory).
        if self == Preset::Gpt1b
            && args.residual != ResidualMode::Plain
            && matches.value_source("recompute") != Some(ValueSource::CommandLine)
        {
            args.recompute = Some(0);
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// A model size with its training settings (flags given override it).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// How sublayers join the residual stream.
    #[arg(long, value_enum, default_value_t = ResidualMode::Mhc)]
    residual: ResidualMode,
    /// Residual streams n for hc and mhc (2, 4 or 8).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// GEMM operands and saved activations: bf16 (f32 accumulation), or f32
    /// throughout (the reference for bf16's loss curves; slower, more memory).
    #[arg(long, value_enum, default_value_t = Precision::Bf16)]
    precision: Precision,
    /// The fused attention's backward: deterministic (two kernels,
    /// bit-reproducible) or fused (one pass, dQ added atomically).
    #[arg(long, value_enum, default_value_t = AttentionBackward::Deterministic)]
    attention_backward: AttentionBackward,
    /// The MLP's GEMMs that meet GELU in a bf16 run on a GPU: cublas
    /// (cuBLAS GEMMs and GELU passes of their own; faster today) or fused
    /// (our kernels, GELU in the GEMM's epilogue).
    #[arg(long, value_enum, default_value_t = MlpGemm::Cublas)]
    mlp_gemm: MlpGemm,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Model width C.
    #[arg(long, default_value_t = 64)]
    width: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Sequence length in bytes.
    #[arg(long, default_value_t = 32)]
    context: usize,
    /// MLP hidden width as a multiple of the model width.
    #[arg(long, default_value_t = 4)]
    mlp_ratio: usize,
    #[arg(long, default_value_t = 150)]
    steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Final learning rate of the cosine decay.
    #[arg(long, default_value_t = 3e-4)]
    min_lr: f32,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// hc/mhc: learning rate of each site's dynamic coefficients (φ, α) as a
    /// multiple of --lr (docs/TRAINER.md, "mHC against plain": at 1 mhc trains
    /// worse than plain).
    #[arg(long, default_value_t = mhc_train::train::config::DYNAMIC_LR_SCALE)]
    dynamic_lr_scale: f32,
    /// hc/mhc: whether weight decay applies to each site's φ (α and biases never decay).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    site_weight_decay: bool,
    #[arg(long, default_value_t = 0.9)]
    beta1: f32,
    #[arg(long, default_value_t = 0.95)]
    beta2: f32,
    #[arg(long, default_value_t = 1e-8)]
    adam_eps: f32,
    /// Clip gradients to this global norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Seeds initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// UTF-8 text to train on (default: the built-in synthetic corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Share of the data held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Validation loss every this many steps.
    #[arg(long, default_value_t = 50)]
    eval_every: u64,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 4)]
    eval_batches: u64,
    /// Checkpoint every this many steps (0: only at the end and on Ctrl-C).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// hc/mhc: recompute the residual streams in the backward in blocks of
    /// this many sites (0: round(sqrt(n·sites/(n+2))), the memory-optimal length).
    #[arg(long, num_args = 0..=1, default_missing_value = "0")]
    recompute: Option<usize>,
    /// Amax gain of H_res every this many steps (hc, mhc).
    #[arg(long, default_value_t = 10)]
    amax_every: u64,
    /// Run directory: metrics.jsonl, checkpoint.safetensors, plot.png/svg, config.json.
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint (same flags).
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that already holds a run (removes its
    /// checkpoint, metrics, config and plots).
    #[arg(long)]
    overwrite: bool,
    /// Stop with a checkpoint after this step, as Ctrl-C would.
    #[arg(long)]
    stop_after: Option<u64>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Directory of the compiled packs (mhc.tpack, model.tpack; built by
    /// scripts/packs). A GPU needs them (default: target/packs); the CPU uses
    /// the kernel sources embedded in the binary unless this is given.
    #[arg(long)]
    packs: Option<PathBuf>,
    /// Data-parallel ranks: one thread per rank, rank r on GPU r (or all on
    /// the CPU with --device cpu); each takes --batch / --ranks sequences of
    /// every step's batch, and the gradients are summed over the ranks.
    #[arg(long, default_value_t = 1)]
    ranks: usize,
    /// How the ranks sum their gradients: auto (NCCL on GPUs, the host
    /// stand-in on the CPU; none with one rank), nccl (all-reduce on its own
    /// stream, overlapped with the backward) or host (rank-ordered sums
    /// through host memory, any device).
    #[arg(long, value_enum, default_value_t = CollectiveChoice::Auto)]
    collective: CollectiveChoice,
    /// Log line interval when there is no progress bar.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Time every kernel and GEMM over this many steps (after two steps of
    /// warm-up and as many timed whole): device time per phase and per
    /// operation as shares of a step, printed and written to profile.md.
    #[arg(long, num_args = 0..=1, default_missing_value = "5")]
    profile: Option<u64>,
    /// No progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
}

impl TrainArgs {
    fn options(self) -> Options {
        Options {
            model: ModelConfig {
                vocab: 256,
                layers: self.layers,
                width: self.width,
                heads: self.heads,
                context: self.context,
                mlp_ratio: self.mlp_ratio,
                residual: self.residual,
                streams: if self.residual == ResidualMode::Plain {
                    1
                } else {
                    self.streams
                },
                precision: self.precision,
                attention_backward: self.attention_backward,
                mlp_gemm: self.mlp_gemm,
            },
            train: TrainConfig {
                steps: self.steps,
                batch: self.batch,
                lr: self.lr,
                min_lr: self.min_lr,
                warmup: self.warmup,
                weight_decay: self.weight_decay,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.adam_eps,
                clip: self.clip,
                seed: self.seed,
                eval_every: self.eval_every,
                eval_batches: self.eval_batches,
                checkpoint_every: self.checkpoint_every,
                dynamic_lr_scale: self.dynamic_lr_scale,
                site_weight_decay: self.site_weight_decay,
            },
            data: self.data,
            val_fraction: self.val_fraction,
            out: self.out,
            resume: self.resume,
            overwrite: self.overwrite,
            device: self.device,
            packs: self.packs,
            stop_after: self.stop_after,
            recompute: self.recompute,
            amax_every: self.amax_every.max(1),
            log_every: self.log_every.max(1),
            profile: self.profile,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
            ranks: self.ranks,
            collective: self.collective,
        }
    }
}

/// The exit status of a run paused by Ctrl-C or SIGTERM (a checkpoint was
/// written; continue with --resume): neither success (0) nor an error (1),
/// nor clap's usage error (2).
const PAUSED: u8 = 3;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Train(mut args) => {
            if let (Some(preset), Some(m)) = (args.preset, matches.subcommand_matches("train")) {
                preset.apply(&mut args, m);
            }
            if args.ranks > 1 || args.collective == CollectiveChoice::Nccl {
                // NCCL reads its environment when it starts: set it while
                // this is the only thread (train sets it too; that is a no-op
                // once done).
                tile_runtime::collective::nccl_env();
            }
            let interrupt = Arc::new(AtomicBool::new(false));
            let flag = interrupt.clone();
            // The first Ctrl-C or SIGTERM pauses at the next step boundary
            // with a checkpoint; a second one exits at once.
            let handler = ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "\ninterrupted: writing a checkpoint after this step (Ctrl-C again to quit now)"
                );
            });
            match handler {
                Ok(()) => run::train(&args.options(), interrupt).map(|s| {
                    if s.interrupted {
                        ExitCode::from(PAUSED)
                    } else {
                        ExitCode::SUCCESS
                    }
                }),
                Err(e) => Err(anyhow::anyhow!("cannot install the Ctrl-C handler: {e}")),
            }
        }
        Command::Plot { runs, out } => run::plot(&runs, &out).map(|files| {
            // A closed stdout (`… | head`) is no reason to fail.
            let mut stdout = std::io::stdout();
            for f in files {
                let _ = writeln!(stdout, "{}", f.display());
            }
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
