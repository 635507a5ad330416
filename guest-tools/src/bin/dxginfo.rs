//! dxginfo: the guest's GPU adapters, as `dxvmm gpus` lists the host's.
//!
//! Usage: dxginfo [--json] [--objects]

use std::process::ExitCode;

use dxvmm_guest_tools::report::{adapter_report, adapters_json, adapters_table, ObjectsReport};
use libdxg::{Dxg, Error, DXG_PATH};

const USAGE: &str = "usage: dxginfo [--json] [--objects]
  Lists the GPU adapters /dev/dxg offers, as `dxvmm gpus` lists the host's.
  --json     print a JSON array (the same fields as `dxvmm gpus --json`)
  --objects  print the host's live object counts for this VM instead";

struct Args {
    json: bool,
    objects: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        json: false,
        objects: false,
    };
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--json" => args.json = true,
            "--objects" => args.objects = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(args)
}

fn run(args: &Args) -> Result<String, Error> {
    let dxg = Dxg::open()?;
    let adapters = dxg.adapters()?;
    if args.objects {
        let first = adapters.first().ok_or(Error::BadAnswer {
            ioctl: "LX_DXENUMADAPTERS3",
            what: "no adapters to ask for object counts".into(),
        })?;
        let counts = ObjectsReport::from(&first.host_objects()?);
        return Ok(if args.json {
            counts.json() + "\n"
        } else {
            counts.table()
        });
    }
    let mut reports = Vec::with_capacity(adapters.len());
    for (index, a) in adapters.iter().enumerate() {
        reports.push(adapter_report(index, &a.host_adapter()?));
    }
    Ok(if args.json {
        adapters_json(&reports) + "\n"
    } else {
        adapters_table(&reports)
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dxginfo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_not_found() => {
            eprintln!("dxginfo: {DXG_PATH} not found: is the dxgkrnl module loaded?");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dxginfo: {e}");
            ExitCode::FAILURE
        }
    }
}
