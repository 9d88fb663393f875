//! `haswarmctl render`: prints the Swarm objects haswarm would create for a
//! manifest, as a stack file, without a daemon.

use haswarm_controller::reconcilers::stack::render_stack;
use haswarm_crds::AnyResource;

use super::apply::{load, Unchecked};
use crate::cli::RenderArgs;
use crate::exit::ExitCode;
use crate::output;

pub fn run(args: &RenderArgs) -> ExitCode {
    let docs = match load(&args.input, &Unchecked::default()) {
        Ok((_, d)) => d,
        Err(code) => return code,
    };
    let resources: Vec<&AnyResource> = docs.iter().map(|d| &d.resource).collect();
    let (stack, notes) = render_stack(&resources);
    println!("# Rendered by haswarmctl render: the Swarm objects haswarm would create.");
    for n in notes {
        println!("# {n}");
    }
    print!("{}", output::yaml(&stack));
    ExitCode::Success
}
