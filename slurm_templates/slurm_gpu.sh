#!/bin/bash
# aso-workflows: Slurm job script for a GPU worker (surrogate training: Fireworks with _category: gpu).
# Rendered by FireWorks' CommonAdapter: each placeholder (two dollar signs, then {name}) is filled
# from my_qadapter_gpu.yaml or by the executor, and a line whose placeholder has no value is dropped,
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
#SBATCH --gres=$${gres}
#SBATCH --gpus=$${gpus}
#SBATCH --constraint=$${constraint}
#SBATCH --chdir=$${launch_dir}
#SBATCH --output=$${launch_dir}/slurm-%j.out
#SBATCH --error=$${launch_dir}/slurm-%j.out
#SBATCH $${extra_sbatch}

export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# environment activation, e.g. "module load cuda/12.4; source ~/aso/.venv-gpu/bin/activate"
$${pre_rocket}

# the GPU Slurm gave this job (the surrogate trains on "cuda" when torch sees one)
echo "aso: Slurm job ${SLURM_JOB_ID} on ${SLURMD_NODENAME}, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-none}"

cd $${launch_dir}
$${rocket_launch}
$${post_rocket}
