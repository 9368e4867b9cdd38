# facelink — `make demo` and `make test` set everything up on a fresh machine, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install system-deps demo test test-fast bench bench-ipr bench-iprf bench-roi bench-roi-lfw-full bench-recognizers train-first export-first train-ipr train-pixel train-iprf train-pixf train-iprb train-pixb train-iprc train-pixc train-iprch train-iprv train-pixv train-ipr96 train-ipr112 train-iprlong train-pixlong bench-iprlong bench-pixlong train-iprlr bench-iprlr bench-ceiling bench-template-lfw-full bench-template-celeba-full train-iprd train-iprd0 train-iprdh bench-dec-lfw-full bench-crop-lfw-full bench-cropc-lfw-full bench-cropc-celeba-full bench-cropv-lfw-full bench-cropv-celeba-full verify-bitexact proto clean

all: test

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=69,<81' wheel
	# torch first, pinned: pip takes 2.14.1 from this machine's disk where it lies there
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) system-deps

# Debian packages the classical-codec benchmarks need (ffmpeg brings libx265, libaom, libsvtav1, libjxl, libwebp).
system-deps:
	@command -v ffmpeg >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }

demo: $(STAMP)
	$(BIN)/facelink demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The foundation's first model: training (about 30 min on 2 CPU cores), export into the registry, golden vectors.
train-first: $(STAMP)
	$(BIN)/facelink train --config cloud/training/configs/first-model.yaml --out runs/first-model --resume
export-first: $(STAMP)
	$(BIN)/facelink export --checkpoint runs/first-model/model.pt --name face-msh-q4 \
	  --description "Foundation first model: pixel loss only (lambda 0.013), LFW images outside View 2 + CelebA train identities" \
	  --command "make train-first"
	$(BIN)/python tests/golden/make_golden.py

# Issue #5: six rate points (q5 = λ 0.013 … q1 = λ 0.0018, q0 = λ 0.0009), each fine-tuned from the next-higher one (q5 from the
# first model), with the identity term (train-ipr) and with pixel loss only (train-pixel, the ablation); resumable
# (a finished rate point, one with model.pt, is not retrained), then each exported to the registry.
# TRAIN_ARGS adds options, e.g. TRAIN_ARGS="--set threads=1" on a busy machine.
# Rate points are exported with float16 weights (half the bytes: the 40 MB budget for committed weights).
# The ablation is not committed: it is exported to runs/models, which FACELINK_MODELS_PATH adds to the registry.
# $(call train-rates,config/run prefix,registry prefix,description,export options[,rate points in training order])
define train-rates
	@set -e; for q in $(or $(5),5 4 3 2 1 0); do \
	  test -f runs/$(1)-q$$q/model.pt || $(BIN)/facelink train --config cloud/training/configs/$(1)-q$$q.yaml --out runs/$(1)-q$$q --resume $(TRAIN_ARGS); \
	  $(BIN)/facelink export --checkpoint runs/$(1)-q$$q/model.pt --name face-$(2)-q$$q \
	    --description "$(3), rate point q$$q (cloud/training/configs/$(1)-q$$q.yaml)" --command "make train-$(1)" \
	    --weights float16 $(4); \
	done
endef
train-ipr: $(STAMP)
	@test -f runs/first-model/model.pt || $(MAKE) train-first
	$(call train-rates,ipr,ipr,IPR: rate + lambda*(pixel MSE + alpha*MobileFaceNet identity))
train-pixel: $(STAMP)
	@test -f runs/first-model/model.pt || $(MAKE) train-first
	$(call train-rates,pixel,pix,Ablation of face-ipr: pixel loss only with the same data and fine-tuning chain,--out-root runs/models)
# The second ladder: pixel distortion weighted to the face region (background 0.1), with the identity term
# (train-iprf) and without it (train-pixf, its ablation); λ continues below the first ladder. Both to runs/models.
train-iprf: $(STAMP)
	@test -f runs/ipr-q3/model.pt || $(MAKE) train-ipr
	$(call train-rates,iprf,iprf,IPR with face-weighted pixel distortion,--out-root runs/models)
train-pixf: $(STAMP)
	@test -f runs/pixel-q3/model.pt || $(MAKE) train-pixel
	$(call train-rates,pixf,pixf,Ablation of face-iprf: face-weighted pixel loss only with the same data and chain,--out-root runs/models)
# The third ladder: each face-weighted rate point fine-tuned 400 steps on the edge's ROI frames (background blurred
# outside the face, as facelink-edge --full-frame --blur-background sends them); measured as facelink-iprb+roi.
train-iprb: $(STAMP)
	@test -f runs/iprf-q0/model.pt || $(MAKE) train-iprf
	$(call train-rates,iprb,iprb,IPR fine-tuned on background-blurred ROI frames,--out-root runs/models,5 4 3 2 1 0 6 7)
train-pixb: $(STAMP)
	@test -f runs/pixf-q0/model.pt || $(MAKE) train-pixf
	$(call train-rates,pixb,pixb,Ablation of face-iprb: pixel loss only on the same ROI frames and chain,--out-root runs/models,5 4 3 2 1 0 6 7)
# The fourth ladder: ROI-tuned rate points with the decoder refined 2,500 steps on the rounded latents it decodes in
# service (train_only: decoder). The edge's parts and tables stay the ROI-tuned point's: same bitstream, same model
# id, same bpp. train-iprd refines face-iprb with the IPR loss (α 300); its ablation train-iprd0 refines the same
# decoder of the same bitstream with pixel loss only (α 0), and train-iprdh with α 1500, so the identity term's effect
# on the decoder is measured at exactly equal bits. Configs exist for the rate points that were run: DEC_RATES (q3
# and q1; q3 only for α 1500).
DEC_RATES ?= 3 1
train-iprd: $(STAMP)
	@test -f runs/iprb-q7/model.pt || $(MAKE) train-iprb
	$(call train-rates,iprd,iprd,IPR ROI-tuned with its decoder refined on rounded latents,--out-root runs/models,$(DEC_RATES))
train-iprd0: $(STAMP)
	@test -f runs/iprb-q7/model.pt || $(MAKE) train-iprb
	$(call train-rates,iprd0,iprd0,Ablation of face-iprd: the same bits with the decoder refined with pixel loss only,--out-root runs/models,$(DEC_RATES))
train-iprdh: $(STAMP)
	@test -f runs/iprb-q7/model.pt || $(MAKE) train-iprb
	$(call train-rates,iprdh,iprdh,IPR bits (iprb) with the decoder refined with alpha 1500,--out-root runs/models,3)
# The fifth ladder, for face crops: each ROI point (iprb / pixb, q1…q5) fine-tuned 1,200 steps on the edge's
# aligned face crops only (no background blur: facelink-edge sends crops as they are), IPR and ablation with the same
# seeds, so the same samples; measured on face crops as facelink-iprc / facelink-pixc.
CROP_RATES ?= 3 1 5 2 4
train-iprc: $(STAMP)
	@test -f runs/iprb-q5/model.pt || $(MAKE) train-iprb
	$(call train-rates,iprc,iprc,IPR fine-tuned on aligned face crops only,--out-root runs/models,$(CROP_RATES))
train-pixc: $(STAMP)
	@test -f runs/pixb-q5/model.pt || $(MAKE) train-pixb
	$(call train-rates,pixc,pixc,Ablation of face-iprc: pixel loss only on the same face crops and chain,--out-root runs/models,$(CROP_RATES))
# iprc with four times the identity weight (α 1200), encoder and decoder trained: does a stronger identity term move
# the bit allocation where the decoder alone could not? Configs exist for the points that were run (q2, q1).
train-iprch: $(STAMP)
	@test -f runs/iprb-q5/model.pt || $(MAKE) train-iprb
	$(call train-rates,iprch,iprch,IPR with alpha 1200 fine-tuned on aligned face crops only,--out-root runs/models,2 1)
# The sixth ladder: each face-crop point (iprc / pixc) fine-tuned 1,200 steps as bitstream version 2 codes a crop
# (latent_area: image: the latent positions over the crop's padding cost nothing and decode to the entropy model's
# means); measured as facelink-iprv / facelink-pixv.
train-iprv: $(STAMP)
	@test -f runs/iprc-q5/model.pt || $(MAKE) train-iprc
	$(call train-rates,iprv,iprv,IPR fine-tuned on face crops coded as bitstream version 2 codes them,--out-root runs/models,$(CROP_RATES))
train-pixv: $(STAMP)
	@test -f runs/pixc-q5/model.pt || $(MAKE) train-pixc
	$(call train-rates,pixv,pixv,Ablation of face-iprv: pixel loss only on the same version-2 face crops and chain,--out-root runs/models,$(CROP_RATES))
# The seventh pair of ladders, for a smaller crop: face-ipr-q0/q1 (committed, so a fresh clone can run this) fine-tuned
# 1,200 steps per point on aligned crops at 96×96 (train-ipr96) and, as its control, with the same recipe, starts and
# seeds at 112×112 (train-ipr112, which adds q0, λ 0.0003, to extend the curve under 216 bytes per face for
# bench-iprlong); both coded as container version 2 codes a crop. bench-template-lfw-full measures
# each at its own crop size beside the untuned face-ipr points and HEVC on the same crops.
TEMPLATE_RATES ?= 1 2 3 4
train-ipr96: $(STAMP)
	$(call train-rates,ipr96,ipr96,IPR fine-tuned on 96x96 aligned face crops,--out-root runs/models,$(TEMPLATE_RATES))
train-ipr112: $(STAMP)
	$(call train-rates,ipr112,ipr112,IPR fine-tuned on 112x112 aligned face crops (control of face-ipr96),--out-root runs/models,$(TEMPLATE_RATES) 0)
# The steps lever on the CPU: ipr112-q1's recipe, start and seed trained 13,200 steps instead of 1,200 (67.5 min on
# 2 CPU threads); IPRLONG_RATES="1 4" adds iprlong-q4, ipr112-q4 trained the same way (configured, not yet trained).
# bench-iprlong measures iprlong-q1 beside the ipr112 ladder and HEVC on the same 112x112 crops and compares it with
# the ipr112 curve and HEVC's at equal bytes per face -> benchmarks/results/iprlong-<dataset>-crop, iprlong-compare.
IPRLONG_RATES ?= 1
train-iprlong: $(STAMP)
	$(call train-rates,iprlong,iprlong,the ipr112 recipe trained 11x as long (the steps lever),--out-root runs/models,$(IPRLONG_RATES))
# Its pixel-loss ablation: alpha 0 at the lambda that lands near its bytes, same start, seed and steps. bench-pixlong
# measures it on the same crops and pairs and compares it with the ipr112 curve and HEVC's committed in
# iprlong-<dataset>-crop, as iprlong-q1 was -> benchmarks/results/pixlong-<dataset>-crop,
# iprlong-compare/<dataset>-pixlong-vs-<anchor>.json.
train-pixlong: $(STAMP)
	$(call train-rates,pixlong,pixlong,Ablation of face-iprlong: pixel loss only at the lambda that matches its bytes,--out-root runs/models,1)
bench-iprlong: $(STAMP) system-deps
	@test -f runs/models/face-iprlong-q1/manifest.json || $(MAKE) train-iprlong
	@test -f runs/models/face-ipr112-q0/manifest.json || $(MAKE) train-ipr112
	@set -e; mkdir -p benchmarks/results/iprlong-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-iprlong facelink-ipr112 hevc,iprlong-$$ds-crop); \
	  for a in facelink-ipr112 hevc; do $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:$$a \
	    benchmarks/results/iprlong-$$ds-crop:facelink-iprlong --out benchmarks/results/iprlong-compare/$$ds-vs-$$a.json; \
	  done; \
	done
bench-pixlong: $(STAMP) system-deps
	@test -f runs/models/face-pixlong-q1/manifest.json || $(MAKE) train-pixlong
	@set -e; mkdir -p benchmarks/results/iprlong-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-pixlong,pixlong-$$ds-crop); \
	  for a in facelink-ipr112 hevc; do $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:$$a \
	    benchmarks/results/pixlong-$$ds-crop:facelink-pixlong --out benchmarks/results/iprlong-compare/$$ds-pixlong-vs-$$a.json; \
	  done; \
	done
# The learning-rate lever on the CPU: ipr112-q1's recipe, start, seed and 1,200 steps at Adam learning rates 5e-4 and
# 1e-3 instead of 1e-4 (13 min each with one thread, both at once). bench-iprlr measures both on the LFW View 2 and
# CelebA test crops and compares each with the committed ipr112 curve with its q0 (iprlong-<dataset>-crop: same
# crops, same pairs) at equal bytes per face, as iprlong-compare does for iprlong-q1
# -> benchmarks/results/iprlr-<dataset>-crop, iprlr-compare.
train-iprlr: $(STAMP)
	$(call train-rates,iprlr5,iprlr5,the ipr112-q1 recipe at learning rate 5e-4,--out-root runs/models,1)
	$(call train-rates,iprlr10,iprlr10,the ipr112-q1 recipe at learning rate 1e-3,--out-root runs/models,1)
bench-iprlr: $(STAMP) system-deps
	@test -f runs/models/face-iprlr10-q1/manifest.json || $(MAKE) train-iprlr
	@set -e; mkdir -p benchmarks/results/iprlr-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-iprlr5 facelink-iprlr10,iprlr-$$ds-crop); \
	  r=benchmarks/results/iprlr-$$ds-crop; o=benchmarks/results/iprlr-compare/$$ds; \
	  for c in iprlr5 iprlr10; do \
	    $(BIN)/facelink bench compare --force benchmarks/results/iprlong-$$ds-crop:facelink-ipr112 \
	      $$r:facelink-$$c --out $$o-$$c-vs-ipr112.json; \
	  done; \
	done
# Where the committed ladder tops out on face crops: face-ipr-q0 ... q5 (q4 and q5 never measured on crops before)
# on the LFW View 2 and CelebA test crops, compared with HEVC's curve in template-<dataset>-crop-112 (same crops, same
# pairs) at equal bytes per face -> benchmarks/results/ceiling-<dataset>-crop, ceiling-compare.
bench-ceiling: $(STAMP) system-deps
	@set -e; mkdir -p benchmarks/results/ceiling-compare; for ds in lfw celeba; do \
	  $(call full-bench,$$ds,face-crop,uncompressed facelink-ipr,ceiling-$$ds-crop); \
	  $(BIN)/facelink bench compare --force benchmarks/results/template-$$ds-crop-112:hevc \
	    benchmarks/results/ceiling-$$ds-crop:facelink-ipr --out benchmarks/results/ceiling-compare/$$ds-ipr-vs-hevc.json; \
	done
# $(call template-bench,dataset,codecs besides uncompressed, the ladder and HEVC): each ladder at its own crop size.
define template-bench
	@test -f runs/models/face-ipr96-q4/manifest.json || $(MAKE) train-ipr96
	@test -f runs/models/face-ipr112-q4/manifest.json || $(MAKE) train-ipr112
	@set -e; for t in 112 96; do \
	  $(call full-bench,$(1),face-crop,uncompressed $(2) facelink-ipr$$t hevc,template-$(1)-crop-$$t) \
	    --crop-template arcface-$$t; \
	done
endef
UNTUNED_CROP_POINTS := facelink-ipr:face-ipr-q0,face-ipr-q1,face-ipr-q2,face-ipr-q3
bench-template-lfw-full: $(STAMP) system-deps
	$(call template-bench,lfw,$(UNTUNED_CROP_POINTS))
bench-template-celeba-full: $(STAMP) system-deps
	$(call template-bench,celeba)

# Every LFW image through the edge path and back through the cloud path; zero mismatches expected.
verify-bitexact: $(STAMP)
	$(BIN)/facelink verify-bitexact --dataset lfw --workers 2 --out benchmarks/results/bitexact_lfw.json

# Issue #4: accuracy-versus-bpp suite — LFW View 2 + CelebA test, every classical codec, both protocols and
# settings, MobileFaceNet and SFace -> benchmarks/results/full. About 4 h of compute with --workers 2 on this 2-core
# machine (CelebA 46 min, LFW full frame and face crop 81 + 72 min with part cached; see benchmarks/README.md);
# resumable (cache: runs/bench/cache.sqlite). With everything cached it only rewrites the report (≈ 40 s).
# BENCH_ARGS adds options, e.g. BENCH_ARGS="--workers 8", or BENCH_ARGS="--limit 20" for a quick run.
bench: $(STAMP) system-deps
	$(BIN)/facelink bench run --datasets lfw,celeba --recognizers mobilefacenet,sface --no-flip-for sface $(BENCH_ARGS)

# Issue #5: the IPR rate points and the pixel-loss ablation (runs/models, from make train-pixel) against HEVC,
# with MobileFaceNet (seen in training) and dlib's ResNet and SFace (never seen), both protocols and settings.
# IPR_BENCH: dataset:pairs-per-fold (0 = the full protocol) -> benchmarks/results/ipr-<dataset>-limit<N> (or -full).
# What ran here: the default below (LFW 200 pairs, CelebA 100 pairs).
IPR_BENCH ?= lfw:20 celeba:10
bench-ipr: $(STAMP) system-deps
	@test -f shared/resources/models/face-ipr-q0/manifest.json || $(MAKE) train-ipr
	@test -f runs/models/face-pix-q0/manifest.json || $(MAKE) train-pixel
	@set -e; for spec in $(IPR_BENCH); do ds=$${spec%%:*}; n=$${spec##*:}; \
	  if [ "$$n" = 0 ]; then lim=""; out=full; else lim="--limit $$n"; out=limit$$n; fi; \
	  FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $$ds $$lim \
	    --recognizers mobilefacenet,sface,dlib-resnet --no-flip-for sface,dlib-resnet \
	    --codecs hevc facelink-ipr facelink-pix facelink-msh --workers 2 --out benchmarks/results/ipr-$$ds-$$out; \
	done

# Issue #5, second ladder: face-weighted IPR (face-iprf) against its ablation (face-pixf) and HEVC, MobileFaceNet
# (seen in training) and SFace (never seen), both protocols and settings.
# IPRF_BENCH: dataset:pairs-per-fold as for bench-ipr -> benchmarks/results/iprf-<dataset>-limit<N>.
IPRF_BENCH ?= lfw:100
bench-iprf: $(STAMP) system-deps
	@test -f runs/models/face-iprf-q0/manifest.json || $(MAKE) train-iprf
	@test -f runs/models/face-pixf-q0/manifest.json || $(MAKE) train-pixf
	@set -e; for spec in $(IPRF_BENCH); do ds=$${spec%%:*}; n=$${spec##*:}; \
	  if [ "$$n" = 0 ]; then lim=""; out=full; else lim="--limit $$n"; out=limit$$n; fi; \
	  FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $$ds $$lim \
	    --recognizers mobilefacenet,sface --no-flip-for sface \
	    --codecs hevc facelink-iprf facelink-pixf --workers 2 --out benchmarks/results/iprf-$$ds-$$out; \
	done

# Issue #5: the edge's face region of interest (facelink-edge --full-frame --blur-background) on full frames:
# HEVC and both face-weighted ladders with and without it, the ROI-tuned ladders behind it, and the blurred frames
# uncompressed (the ceiling).
# ROI_BENCH: dataset:pairs-per-fold as above -> benchmarks/results/roi-<dataset>-limit<N> (or -full).
ROI_BENCH ?= lfw:100
bench-roi: $(STAMP) system-deps
	@test -f runs/models/face-iprf-q0/manifest.json || $(MAKE) train-iprf
	@test -f runs/models/face-pixf-q0/manifest.json || $(MAKE) train-pixf
	@test -f runs/models/face-iprb-q0/manifest.json || $(MAKE) train-iprb
	@test -f runs/models/face-pixb-q0/manifest.json || $(MAKE) train-pixb
	@set -e; for spec in $(ROI_BENCH); do ds=$${spec%%:*}; n=$${spec##*:}; \
	  if [ "$$n" = 0 ]; then lim=""; out=full; else lim="--limit $$n"; out=limit$$n; fi; \
	  FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $$ds $$lim --protocols full-frame \
	    --recognizers mobilefacenet,sface --no-flip-for sface \
	    --codecs uncompressed+roi hevc hevc+roi facelink-iprf facelink-iprf+roi facelink-pixf facelink-pixf+roi \
	      facelink-iprb+roi facelink-pixb+roi \
	    --workers 2 --out benchmarks/results/roi-$$ds-$$out; \
	done

# One full-protocol run (6,000 pairs, probe coded) with MobileFaceNet (seen in training) and SFace (unseen), learned
# models from runs/models: $(call full-bench,dataset,protocol,codecs,results folder under benchmarks/results)
define full-bench
	FACELINK_MODELS_PATH=runs/models $(BIN)/facelink bench run --datasets $(1) --protocols $(2) \
	  --settings asymmetric --recognizers mobilefacenet,sface --no-flip-for sface \
	  --codecs $(3) --workers 2 --out benchmarks/results/$(4)
endef

# Issue #5: the ROI-tuned ladders (q0-q7) on all of LFW View 2, full frames, probe coded (a run with the asymmetric
# setting alone codes only the probes: 4,576 of 7,701 images per rate point) -> benchmarks/results/roi-lfw-full.
bench-roi-lfw-full: $(STAMP) system-deps
	@test -f runs/models/face-iprb-q7/manifest.json || $(MAKE) train-iprb
	@test -f runs/models/face-pixb-q7/manifest.json || $(MAKE) train-pixb
	$(call full-bench,lfw,full-frame,uncompressed+roi facelink-pixb+roi facelink-iprb+roi hevc+roi hevc,roi-lfw-full)

# Issue #5: the ROI-tuned ladders (q0-q7) on aligned 112×112 face crops, all of LFW View 2, probe coded
# -> benchmarks/results/iprb-lfw-full-crop (bytes per face at parity; HEVC's rows come from the cache of make bench).
bench-crop-lfw-full: $(STAMP) system-deps
	@test -f runs/models/face-iprb-q7/manifest.json || $(MAKE) train-iprb
	@test -f runs/models/face-pixb-q7/manifest.json || $(MAKE) train-pixb
	$(call full-bench,lfw,face-crop,uncompressed facelink-iprb facelink-pixb hevc,iprb-lfw-full-crop)

# Issue #5: the face-crop ladder (iprc, its ablation pixc, iprch with α 1200) beside the ladders it was tuned from,
# on all of LFW View 2's face crops -> benchmarks/results/iprc-lfw-full-crop (iprb, pixb, HEVC and uncompressed come
# from the cache). The results committed there (and in iprc-celeba-full-crop) were made with container version 1, at
# commit 627bc1b; a run today codes the crops as version 2.
bench-cropc-lfw-full: $(STAMP) system-deps
	@test -f runs/models/face-iprc-q4/manifest.json || $(MAKE) train-iprc
	@test -f runs/models/face-pixc-q4/manifest.json || $(MAKE) train-pixc
	@test -f runs/models/face-iprch-q1/manifest.json || $(MAKE) train-iprch
	$(call full-bench,lfw,face-crop,uncompressed facelink-iprc facelink-pixc facelink-iprch facelink-iprb facelink-pixb hevc,iprc-lfw-full-crop)

# The same two ladders on the CelebA test protocol's face crops -> benchmarks/results/iprc-celeba-full-crop (HEVC and
# uncompressed from the cache of make bench).
bench-cropc-celeba-full: $(STAMP) system-deps
	@test -f runs/models/face-iprc-q4/manifest.json || $(MAKE) train-iprc
	@test -f runs/models/face-pixc-q4/manifest.json || $(MAKE) train-pixc
	$(call full-bench,celeba,face-crop,uncompressed facelink-iprc facelink-pixc hevc,iprc-celeba-full-crop)

# Issue #5, container version 2: the ladder tuned for version-2 crops (iprv, its ablation pixv) beside the face-crop
# ladder it started from (iprc, pixc), all coded as version 2, on all of LFW View 2's and the CelebA test protocol's
# face crops -> benchmarks/results/iprv-lfw-full-crop, iprv-celeba-full-crop.
bench-cropv-lfw-full: $(STAMP) system-deps
	@test -f runs/models/face-iprv-q5/manifest.json || $(MAKE) train-iprv
	@test -f runs/models/face-pixv-q5/manifest.json || $(MAKE) train-pixv
	$(call full-bench,lfw,face-crop,uncompressed facelink-iprv facelink-pixv facelink-iprc facelink-pixc hevc,iprv-lfw-full-crop)
bench-cropv-celeba-full: $(STAMP) system-deps
	@test -f runs/models/face-iprv-q5/manifest.json || $(MAKE) train-iprv
	@test -f runs/models/face-pixv-q5/manifest.json || $(MAKE) train-pixv
	$(call full-bench,celeba,face-crop,uncompressed facelink-iprv facelink-pixv facelink-iprc facelink-pixc hevc,iprv-celeba-full-crop)

# Issue #5: the decoder-refined rate points beside the ROI-tuned ladder whose bits they decode, all of LFW View 2,
# full frames, probe coded -> benchmarks/results/dec-lfw-full (the ROI-tuned, HEVC and uncompressed rows come from
# the cache when bench-roi-lfw-full ran first).
bench-dec-lfw-full: $(STAMP) system-deps
	@test -f runs/models/face-iprd-q1/manifest.json || $(MAKE) train-iprd
	@test -f runs/models/face-iprd0-q1/manifest.json || $(MAKE) train-iprd0
	@test -f runs/models/face-iprdh-q3/manifest.json || $(MAKE) train-iprdh
	$(call full-bench,lfw,full-frame,uncompressed+roi facelink-iprd0+roi facelink-iprd+roi facelink-iprdh+roi facelink-iprb+roi hevc,dec-lfw-full)

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
