#!/bin/bash
# aso-workflows: Slurm job script for a CPU worker (simulations: PDF, FEFF absorber runs).
# Rendered by FireWorks' CommonAdapter: each placeholder (two dollar signs, then {name}) is filled
# from my_qadapter_cpu.yaml or by the executor, and a line whose placeholder has no value is dropped,
# so optional #SBATCH lines can stay. launch_dir, job_name and rocket_launch are filled by qlaunch or
# by the offline executor; never write a placeholder inside a comment (it would be filled or dropped).
#SBATCH --job-name=$${job_name}
#SBATCH --partition=$${partition}
#SBATCH --account=$${account}
#SBATCH --qos=$${qos}
#SBATCH --time=$${walltime}
#SBATCH --nodes=$${nodes}
#SBATCH --ntasks=$${ntasks}
#SBATCH --cpus-per-task=$${cpus_per_task}
#SBATCH --mem=$${mem}
#SBATCH --constraint=$${constraint}
#SBATCH --chdir=$${launch_dir}
#SBATCH --output=$${launch_dir}/slurm-%j.out
#SBATCH --error=$${launch_dir}/slurm-%j.out
#SBATCH $${extra_sbatch}

# one thread per requested CPU for numpy/torch
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# environment activation, e.g. "module load python/3.11; source ~/aso/.venv/bin/activate"
$${pre_rocket}

cd $${launch_dir}
$${rocket_launch}
$${post_rocket}
