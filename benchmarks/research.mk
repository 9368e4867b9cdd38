# The research record's recipes: training the ladders (cloud/training/ladders/) and benchmarking them
# (benchmarks/research.md says what each found). Run from the repository root:
#     make -f benchmarks/research.mk help
#     make -f benchmarks/research.mk train-ipr112
# Training is resumable: a point with runs/<ladder>-<point>/model.pt is not retrained. POINTS="q3 q1" trains only
# those points of a ladder (default: every point, in its ladder file's order); TRAIN_ARGS adds options, e.g.
# TRAIN_ARGS="--set threads=1" on a busy machine. Only face-ipr and face-msh-q4 are committed
# (shared/resources/models); every other ladder is exported to runs/models, which FACELINK_MODELS_PATH=runs/models
# adds to the registry. Rate points are exported with float16 weights (the 40 MB budget for committed weights).
RESEARCH_MK := $(lastword $(MAKEFILE_LIST))
include $(dir $(RESEARCH_MK))../Makefile
RESEARCH := $(MAKE) -f $(RESEARCH_MK)
POINTS ?=
TRAIN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: train-first export-first train-ipr train-pixel train-iprf train-pixf train-iprb train-pixb train-iprd \
  train-iprd0 train-iprdh train-iprc train-pixc train-iprch train-iprv train-pixv train-ipr96 train-ipr112 \
  train-iprlong train-pixlong train-iprlr bench-ipr bench-iprf bench-roi bench-roi-lfw-full bench-crop-lfw-full \
  bench-cropc-lfw-full bench-cropc-celeba-full bench-cropv-lfw-full bench-cropv-celeba-full bench-dec-lfw-full \
  bench-template-lfw-full bench-template-celeba-full bench-iprlong bench-pixlong bench-iprlr bench-ceiling

# $(call train-ladder,ladder,export options[,points]): train each point (POINTS, else the given points, else all
# of the ladder's) into runs/<ladder>-<point>, then export it as face-<family>-<point> with what its ladder says
# of it in the manifest (facelink export --ladder).
define train-ladder
	@set -e; for p in $(or $(POINTS),$(3),$$($(BIN)/python -m facelink.cloud.training.ladder $(1))); do \
	  test -f runs/$(1)-$$p/model.pt || \
	    $(BIN)/facelink train --ladder $(1) --point $$p --out runs/$(1)-$$p --resume $(TRAIN_ARGS); \
	  $(BIN)/facelink export --ladder $(1) --point $$p --checkpoint runs/$(1)-$$p/model.pt \
	    --command "make -f benchmarks/research.mk $@" --weights float16 $(2); \
	done
endef
TO_RUNS := --out-root runs/models

# The foundation's first model (about 30 min on 2 CPU cores) into runs/first-model; export as face-msh-q4 in float32,
# and the golden vectors that pin it.
train-first: $(STAMP) ## the first model (ladder msh, runs/first-model)
	$(BIN)/facelink train --ladder msh --point q4 --out runs/first-model --resume $(TRAIN_ARGS)
export-first: $(STAMP) ## export the first model as face-msh-q4 and regenerate the golden vectors
	$(BIN)/facelink export --ladder msh --point q4 --checkpoint runs/first-model/model.pt \
	  --command "make -f benchmarks/research.mk train-first"
	$(BIN)/python tests/golden/make_golden.py

# Six rate points, each fine-tuned from the next-higher one (q5 from the first model), with the identity term
# (train-ipr, committed) and with pixel loss only (train-pixel, the ablation).
train-ipr: $(STAMP) ## the ipr ladder (committed as face-ipr-q*)
	@test -f runs/first-model/model.pt || $(RESEARCH) train-first
	$(call train-ladder,ipr,)
train-pixel: $(STAMP) ## its pixel-loss ablation (face-pix-q*)
	@test -f runs/first-model/model.pt || $(RESEARCH) train-first
	$(call train-ladder,pixel,$(TO_RUNS))
train-iprf: $(STAMP) ## face-weighted pixel distortion with the identity term
	@test -f runs/ipr-q3/model.pt || $(RESEARCH) train-ipr
	$(call train-ladder,iprf,$(TO_RUNS))
train-pixf: $(STAMP) ## its pixel-loss ablation
	@test -f runs/pixel-q3/model.pt || $(RESEARCH) train-pixel
	$(call train-ladder,pixf,$(TO_RUNS))
train-iprb: $(STAMP) ## iprf fine-tuned on the edge's background-blurred ROI frames
	@test -f runs/iprf-q0/model.pt || $(RESEARCH) train-iprf
	$(call train-ladder,iprb,$(TO_RUNS))
train-pixb: $(STAMP) ## its pixel-loss ablation
	@test -f runs/pixf-q0/model.pt || $(RESEARCH) train-pixf
	$(call train-ladder,pixb,$(TO_RUNS))
# Decoder refinement: the same bitstream as iprb, the decoder refined with α 300 / 0 (ablation) / 1500.
train-iprd: $(STAMP) ## iprb's decoder refined on rounded latents (α 300)
	@test -f runs/iprb-q7/model.pt || $(RESEARCH) train-iprb
	$(call train-ladder,iprd,$(TO_RUNS))
train-iprd0: $(STAMP) ## its ablation: the same bits, the decoder refined with pixel loss only
	@test -f runs/iprb-q7/model.pt || $(RESEARCH) train-iprb
	$(call train-ladder,iprd0,$(TO_RUNS))
train-iprdh: $(STAMP) ## the same bits, the decoder refined with α 1500
	@test -f runs/iprb-q7/model.pt || $(RESEARCH) train-iprb
	$(call train-ladder,iprdh,$(TO_RUNS))
train-iprc: $(STAMP) ## iprb fine-tuned on aligned face crops only
	@test -f runs/iprb-q5/model.pt || $(RESEARCH) train-iprb
	$(call train-ladder,iprc,$(TO_RUNS))
train-pixc: $(STAMP) ## its pixel-loss ablation
	@test -f runs/pixb-q5/model.pt || $(RESEARCH) train-pixb
	$(call train-ladder,pixc,$(TO_RUNS))
train-iprch: $(STAMP) ## iprc with α 1200
	@test -f runs/iprb-q5/model.pt || $(RESEARCH) train-iprb
	$(call train-ladder,iprch,$(TO_RUNS))
train-iprv: $(STAMP) ## iprc fine-tuned as container version 2 codes a crop
	@test -f runs/iprc-q5/model.pt || $(RESEARCH) train-iprc
	$(call train-ladder,iprv,$(TO_RUNS))
train-pixv: $(STAMP) ## its pixel-loss ablation
	@test -f runs/pixc-q5/model.pt || $(RESEARCH) train-pixc
	$(call train-ladder,pixv,$(TO_RUNS))
# From the committed face-ipr points, so a fresh clone can run these.
train-ipr96: $(STAMP) ## face-ipr fine-tuned on 96×96 crops
	$(call train-ladder,ipr96,$(TO_RUNS))
train-ipr112: $(STAMP) ## its control at 112×112 (with q0, under 216 B per face)
	$(call train-ladder,ipr112,$(TO_RUNS))
train-iprlong: $(STAMP) ## ipr112-q1 trained 11× as long (POINTS="q1 q4" adds q4, configured, not trained)
	$(call train-ladder,iprlong,$(TO_RUNS),q1)
train-pixlong: $(STAMP) ## its pixel-loss ablation at the λ that matches its bytes
	$(call train-ladder,pixlong,$(TO_RUNS))
train-iprlr: $(STAMP) ## ipr112-q1 at learning rates 5e-4 and 1e-3
	$(call train-ladder,iprlr5,$(TO_RUNS))
	$(call train-ladder,iprlr10,$(TO_RUNS))

# $(call full-bench,dataset,protocol,codecs,results folder): one full-protocol run (6,000 pairs, probe coded) with
# MobileFaceNet (seen in training) and SFace (never seen), learned models from runs/models.
define full-bench
	FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $(1) --protocols $(2) \
	  --settings asymmetric --recognizers mobilefacenet sface --no-flip-for sface \
	  --codecs $(3) --workers 2 --out benchmarks/results/$(4)
endef
# $(call limited-bench,specs,recognizers,codecs,prefix[,options]): for each dataset:pairs-per-fold in specs (0 = the
# full protocol) a run into benchmarks/results/<prefix>-<dataset>-limit<N> (or -full); SFace and dlib never flipped.
define limited-bench
	@set -e; for spec in $(1); do ds=$${spec%%:*}; n=$${spec##*:}; \
	  if [ "$$n" = 0 ]; then lim=""; out=full; else lim="--limit $$n"; out=limit$$n; fi; \
	  FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $$ds $$lim $(5) \
	    --recognizers $(2) --no-flip-for $(filter-out mobilefacenet,$(2)) \
	    --codecs $(3) --workers 2 --out benchmarks/results/$(4)-$$ds-$$out; \
	done
endef

# The ipr ladder and its ablation against HEVC with MobileFaceNet (seen in training), dlib's ResNet and SFace (never
# seen), both protocols and settings. IPR_BENCH: dataset:pairs-per-fold; what ran: LFW 200 pairs, CelebA 100.
IPR_BENCH ?= lfw:20 celeba:10
bench-ipr: install ## ipr, pix, msh and HEVC -> results/ipr-<dataset>-limit<N>
	@test -f shared/resources/models/face-ipr-q0/manifest.json || $(RESEARCH) train-ipr
	@test -f runs/models/face-pix-q0/manifest.json || $(RESEARCH) train-pixel
	$(call limited-bench,$(IPR_BENCH),mobilefacenet sface dlib-resnet,hevc facelink-ipr facelink-pix facelink-msh,ipr)
IPRF_BENCH ?= lfw:100
bench-iprf: install ## iprf, pixf and HEVC -> results/iprf-<dataset>-limit<N>
	@test -f runs/models/face-iprf-q0/manifest.json || $(RESEARCH) train-iprf
	@test -f runs/models/face-pixf-q0/manifest.json || $(RESEARCH) train-pixf
	$(call limited-bench,$(IPRF_BENCH),mobilefacenet sface,hevc facelink-iprf facelink-pixf,iprf)
# The edge's face region of interest (facelink-edge --full-frame --blur-background) on full frames.
ROI_BENCH ?= lfw:100
ROI_CODECS := uncompressed+roi hevc hevc+roi facelink-iprf facelink-iprf+roi facelink-pixf facelink-pixf+roi \
  facelink-iprb+roi facelink-pixb+roi
bench-roi: install ## the ROI on full frames -> results/roi-<dataset>-limit<N>
	@test -f runs/models/face-iprb-q0/manifest.json || $(RESEARCH) train-iprb
	@test -f runs/models/face-pixb-q0/manifest.json || $(RESEARCH) train-pixb
	$(call limited-bench,$(ROI_BENCH),mobilefacenet sface,$(ROI_CODECS),roi,--protocols full-frame)
bench-roi-lfw-full: install ## the ROI-tuned ladders on all of LFW View 2, full frames -> results/roi-lfw-full
	@test -f runs/models/face-iprb-q7/manifest.json || $(RESEARCH) train-iprb
	@test -f runs/models/face-pixb-q7/manifest.json || $(RESEARCH) train-pixb
	$(call full-bench,lfw,full-frame,uncompressed+roi facelink-pixb+roi facelink-iprb+roi hevc+roi hevc,roi-lfw-full)
bench-crop-lfw-full: install ## the ROI-tuned ladders on LFW face crops -> results/iprb-lfw-full-crop
	@test -f runs/models/face-iprb-q7/manifest.json || $(RESEARCH) train-iprb
	@test -f runs/models/face-pixb-q7/manifest.json || $(RESEARCH) train-pixb
	$(call full-bench,lfw,face-crop,uncompressed facelink-iprb facelink-pixb hevc,iprb-lfw-full-crop)
# The committed iprc results were made with container version 1 (commit 627bc1b); a run today codes version 2.
CROPC_CODECS := uncompressed facelink-iprc facelink-pixc facelink-iprch facelink-iprb facelink-pixb hevc
bench-cropc-lfw-full: install ## the face-crop ladders on LFW -> results/iprc-lfw-full-crop
	@test -f runs/models/face-iprc-q4/manifest.json || $(RESEARCH) train-iprc
	@test -f runs/models/face-pixc-q4/manifest.json || $(RESEARCH) train-pixc
	@test -f runs/models/face-iprch-q1/manifest.json || $(RESEARCH) train-iprch
	$(call full-bench,lfw,face-crop,$(CROPC_CODECS),iprc-lfw-full-crop)
bench-cropc-celeba-full: install ## the face-crop ladders on CelebA -> results/iprc-celeba-full-crop
	@test -f runs/models/face-iprc-q4/manifest.json || $(RESEARCH) train-iprc
	@test -f runs/models/face-pixc-q4/manifest.json || $(RESEARCH) train-pixc
	$(call full-bench,celeba,face-crop,uncompressed facelink-iprc facelink-pixc hevc,iprc-celeba-full-crop)
CROPV_CODECS := uncompressed facelink-iprv facelink-pixv facelink-iprc facelink-pixc hevc
bench-cropv-lfw-full: install ## the version-2 crop ladders on LFW -> results/iprv-lfw-full-crop
	@test -f runs/models/face-iprv-q5/manifest.json || $(RESEARCH) train-iprv
	@test -f runs/models/face-pixv-q5/manifest.json || $(RESEARCH) train-pixv
	$(call full-bench,lfw,face-crop,$(CROPV_CODECS),iprv-lfw-full-crop)
bench-cropv-celeba-full: install ## the version-2 crop ladders on CelebA -> results/iprv-celeba-full-crop
	@test -f runs/models/face-iprv-q5/manifest.json || $(RESEARCH) train-iprv
	@test -f runs/models/face-pixv-q5/manifest.json || $(RESEARCH) train-pixv
	$(call full-bench,celeba,face-crop,$(CROPV_CODECS),iprv-celeba-full-crop)
DEC_CODECS := uncompressed+roi facelink-iprd0+roi facelink-iprd+roi facelink-iprdh+roi facelink-iprb+roi hevc
bench-dec-lfw-full: install ## the decoder-refined points beside iprb, LFW full frames -> results/dec-lfw-full
	@test -f runs/models/face-iprd-q1/manifest.json || $(RESEARCH) train-iprd
	@test -f runs/models/face-iprd0-q1/manifest.json || $(RESEARCH) train-iprd0
	@test -f runs/models/face-iprdh-q3/manifest.json || $(RESEARCH) train-iprdh
	$(call full-bench,lfw,full-frame,$(DEC_CODECS),dec-lfw-full)
# $(call template-bench,dataset,codecs besides uncompressed, the ladder and HEVC): each ladder at its own crop size.
define template-bench
	@test -f runs/models/face-ipr96-q4/manifest.json || $(RESEARCH) train-ipr96
	@test -f runs/models/face-ipr112-q4/manifest.json || $(RESEARCH) train-ipr112
	@set -e; for t in 112 96; do \
	  $(call full-bench,$(1),face-crop,uncompressed $(2) facelink-ipr$$t hevc,template-$(1)-crop-$$t) \
	    --crop-template arcface-$$t; \
	done
endef
UNTUNED_CROP_POINTS := facelink-ipr:face-ipr-q0,face-ipr-q1,face-ipr-q2,face-ipr-q3
bench-template-lfw-full: install ## ipr96 / ipr112 at their crop sizes, LFW -> results/template-lfw-crop-<size>
	$(call template-bench,lfw,$(UNTUNED_CROP_POINTS))
bench-template-celeba-full: install ## the same on CelebA -> results/template-celeba-crop-<size>
	$(call template-bench,celeba)
# The steps lever: iprlong-q1 (and its ablation pixlong-q1) beside the ipr112 ladder and HEVC on the same crops,
# compared at equal bytes per face -> results/iprlong-<dataset>-crop, pixlong-<dataset>-crop, iprlong-compare.
bench-iprlong: install ## iprlong against ipr112 and HEVC
	@test -f runs/models/face-iprlong-q1/manifest.json || $(RESEARCH) train-iprlong
	@test -f runs/models/face-ipr112-q0/manifest.json || $(RESEARCH) train-ipr112
	@set -e; mkdir -p benchmarks/results/iprlong-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-iprlong facelink-ipr112 hevc,iprlong-$$ds-crop); \
	  for a in facelink-ipr112 hevc; do $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:$$a \
	    benchmarks/results/iprlong-$$ds-crop:facelink-iprlong --out benchmarks/results/iprlong-compare/$$ds-vs-$$a.json; \
	  done; \
	done
bench-pixlong: install ## pixlong against the ipr112 and HEVC curves of bench-iprlong
	@test -f runs/models/face-pixlong-q1/manifest.json || $(RESEARCH) train-pixlong
	@set -e; mkdir -p benchmarks/results/iprlong-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-pixlong,pixlong-$$ds-crop); \
	  for a in facelink-ipr112 hevc; do $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:$$a \
	    benchmarks/results/pixlong-$$ds-crop:facelink-pixlong \
	    --out benchmarks/results/iprlong-compare/$$ds-pixlong-vs-$$a.json; \
	  done; \
	done
# The learning-rate lever against the ipr112 curve with its q0 (iprlong-<dataset>-crop: same crops, same pairs).
bench-iprlr: install ## iprlr5 / iprlr10 against ipr112 -> results/iprlr-<dataset>-crop, iprlr-compare
	@test -f runs/models/face-iprlr10-q1/manifest.json || $(RESEARCH) train-iprlr
	@set -e; mkdir -p benchmarks/results/iprlr-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-iprlr5 facelink-iprlr10,iprlr-$$ds-crop); \
	  r=benchmarks/results/iprlr-$$ds-crop; o=benchmarks/results/iprlr-compare/$$ds; \
	  for c in iprlr5 iprlr10; do \
	    $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:facelink-ipr112 \
	      $$r:facelink-$$c --out $$o-$$c-vs-ipr112.json; \
	  done; \
	done
# Where the committed ladder tops out on face crops, against HEVC's curve in template-<dataset>-crop-112.
bench-ceiling: install ## face-ipr q0-q5 on LFW and CelebA crops -> results/ceiling-<dataset>-crop, ceiling-compare
	@set -e; mkdir -p benchmarks/results/ceiling-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-ipr,ceiling-$$ds-crop); \
	  $(BIN)/facelink bench compare --force benchmarks/results/template-$$ds-crop-112:hevc \
	    benchmarks/results/ceiling-$$ds-crop:facelink-ipr --out benchmarks/results/ceiling-compare/$$ds-ipr-vs-hevc.json; \
	done

# Codec core v2: one variable-rate model (cloud/training/configs/core-v2.yaml, its stages: ladder) trained for days on
# one CPU thread in the background (nice 5, OMP_NUM_THREADS=1; output in ~/.cache/facelink/core-v2/train.out), resuming
# from ~/.cache/facelink/core-v2/checkpoint.pt or, on a fresh machine, from the committed milestone
# (cloud/training/checkpoints/core-v2.safetensors). Progress per quality: benchmarks/results/core-v2/progress.json.
.PHONY: train-core-v2 train-core-v2-a0 milestone-core-v2 device-kit-core-v2
train-core-v2: $(STAMP) ## start or resume core v2's long training in the background (one thread)
	$(BIN)/facelink core-v2 start --config cloud/training/configs/core-v2.yaml
train-core-v2-a0: $(STAMP) ## its α = 0 ablation: the same stages and budget, pixel loss only
	$(BIN)/facelink core-v2 start --config cloud/training/configs/core-v2-a0.yaml
milestone-core-v2: $(STAMP) ## export core v2's checkpoint as the committed float16 milestone
	$(BIN)/facelink core-v2 milestone --config cloud/training/configs/core-v2.yaml
device-kit-core-v2: $(STAMP) ## what a training chunk on an accelerator needs beside the tree (runs/device-kit)
	$(BIN)/facelink core-v2 device-kit --config cloud/training/configs/core-v2.yaml --out runs/device-kit

# Core v2 measured as the committed ladders were (probe coded; LFW View 2 and the CelebA test protocol; 112x112
# crops, and full frames behind the edge's ROI; MobileFaceNet, SFace and dlib, the latter two never flipped), beside
# HEVC, AVIF, JPEG XL and the committed face-ipr ladder on the same pairs, then benchmarks/results/core-v2/summary.json
# and summary.png (facelink bench core-v2-summary). The model is the committed milestone (V2_SOURCE=checkpoint: the
# local run's checkpoint) exported as face-v2-run into runs/models (face-v2 is the shipped release, codec
# facelink-v2). V2_LIMIT=N: N pairs per fold (empty: 6,000 pairs);
# V2_PROTOCOLS=crop or full: one protocol; V2_DATASETS, V2_RECOGNIZERS, V2_QUALITIES (the sweep) likewise; V2_OUT: the
# folder (default benchmarks/results/core-v2; a step-N folder keeps an intermediate milestone beside the summary);
# V2_CROP_CODECS, V2_FULL_CODECS: the codecs beside v2 (a milestone check may leave out AVIF and JPEG XL).
V2_SOURCE ?= milestone
V2_QUALITIES ?= 0,1,2,3,4,5,6,7
V2_DATASETS ?= lfw celeba
V2_RECOGNIZERS ?= mobilefacenet sface dlib-resnet
V2_LIMIT ?=
V2_PROTOCOLS ?= crop full
V2_WORKERS ?= 2
V2_OUT ?= benchmarks/results/core-v2
V2_CROP_CODECS ?= uncompressed facelink-v2-run:$(V2_QUALITIES) hevc avif jxl facelink-ipr
V2_FULL_CODECS ?= facelink-v2-run+roi:$(V2_QUALITIES) hevc+roi hevc avif+roi jxl+roi facelink-ipr+roi
V2_RUN = FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --settings asymmetric \
  --recognizers $(V2_RECOGNIZERS) $(if $(filter-out mobilefacenet,$(V2_RECOGNIZERS)),--no-flip-for \
  $(filter-out mobilefacenet,$(V2_RECOGNIZERS))) \
  $(if $(V2_LIMIT),--limit $(V2_LIMIT)) --workers $(V2_WORKERS)
V2_SUFFIX := $(if $(V2_LIMIT),-limit$(V2_LIMIT))
.PHONY: bench-core-v2
bench-core-v2: install ## core v2's quality sweep against HEVC, AVIF, JPEG XL, face-ipr -> results/core-v2/summary.json
	$(BIN)/facelink core-v2 export --config cloud/training/configs/core-v2.yaml --source $(V2_SOURCE) --name face-v2-run \
	  --out-root runs/models > /dev/null
	@set -e; for ds in $(V2_DATASETS); do \
	  $(if $(filter crop,$(V2_PROTOCOLS)),$(V2_RUN) --datasets $$ds --protocols face-crop \
	    --codecs $(V2_CROP_CODECS) --out $(V2_OUT)/$$ds-crop$(V2_SUFFIX);) \
	  $(if $(filter full,$(V2_PROTOCOLS)),$(V2_RUN) --datasets $$ds --protocols full-frame \
	    --codecs $(V2_FULL_CODECS) --out $(V2_OUT)/$$ds-full$(V2_SUFFIX);) \
	done
	FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench core-v2-summary --codec facelink-v2-run \
	  $(foreach ds,$(V2_DATASETS),$(foreach p,$(V2_PROTOCOLS),$(V2_OUT)/$(ds)-$(p)$(V2_SUFFIX))) \
	  --made-by "make -f benchmarks/research.mk bench-core-v2 $(strip $(foreach v,V2_SOURCE V2_QUALITIES \
	    V2_DATASETS V2_RECOGNIZERS V2_LIMIT V2_PROTOCOLS,$(v)='$($(v))') $(foreach v,V2_OUT V2_CROP_CODECS \
	    V2_FULL_CODECS,$(if $(filter command line,$(origin $(v))),$(v)='$($(v))')))" \
	  --out $(V2_OUT)/summary.json
