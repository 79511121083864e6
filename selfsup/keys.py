"""Batch keys and the ignore label, named once and reused by every data pipeline, objective and
head. A new modality adds its keys here."""

IGNORE = -100  # label value that losses skip

# text
INPUT_IDS = "input_ids"  # (B, T) token ids
ATTENTION_MASK = "attention_mask"  # (B, T) 1 on real tokens, 0 on padding
TOKEN_TYPE_IDS = "token_type_ids"  # (B, T) segment A = 0, B = 1
POSITION_IDS = "position_ids"  # (B, T) positions (restart per example in packed rows)
LABELS = "labels"  # (B, T) MLM/tag targets or (B,) class/regression targets
PAIR_LABELS = "pair_labels"  # (B,) NSP/SOP labels
SEQ_IDS = "seq_ids"  # (R, T) example of each token in a packed row, -1 on padding
CLS_INDEX = "cls_index"  # (E,) flat index of each packed example's first token
# encoder-decoder (the source is INPUT_IDS / ATTENTION_MASK, the target LABELS, IGNORE on padding)
DECODER_INPUT_IDS = "decoder_input_ids"  # (B, T) the target shifted right
DECODER_POSITION_IDS = "decoder_position_ids"  # (B, T) positions of the target (MASS)
DECODER_SEQ_IDS = "decoder_seq_ids"  # (R, T) SEQ_IDS of packed targets
# extractive QA
START_POSITIONS = "start_positions"  # (B,)
END_POSITIONS = "end_positions"  # (B,)
CONTEXT_MASK = "context_mask"  # (B, T) 1 on context tokens
# audio (frames at the feature rate; `padding_mask` is True on padding, as s3prl and fairseq)
WAVE = "wave"  # (B, S) waveform samples
FEATURES = "features"  # (B, T, F) frame features (log-mel, MFCC), corrupted for reconstruction
PADDING_MASK = "padding_mask"  # (B, T) True on padding frames
TARGETS = "targets"  # (B, T, F) the frames to restore (the uncorrupted features)
FRAME_MASK = "frame_mask"  # (B, T, F) True where the loss scores a target value
# waveform encoders (wav2vec 2.0, HuBERT): T' encoder frames, one every total conv stride
TIME_MASK = "time_mask"  # (B, T') True on the encoder frames replaced by the mask embedding
# HuBERT's TARGETS are (B, T') long: the cluster id of each encoder frame, IGNORE on padding
NEGATIVES = "negatives"  # (B, T', K) per masked frame, the frames of its K distractors
NOISE_SEED = "noise_seed"  # (B,) int64 seed of each utterance's Gumbel noise (wav2vec 2.0)
OTHER_NEGATIVES = "other_negatives"  # (B, T', K) CPC: flat indices into the whole batch's frames
# images (float32 in [0, 1], channels first; the encoders normalise)
IMAGES = "images"  # (B, C, H, W) one image per example (rotated, or whole for probes)
VIEWS = "views"  # (B, V, C, H, W) V augmented views of each image; positives share a row
PATCHES = "patches"  # (B, 2, C, P, P) relative patch position: the centre patch, then a neighbour
POSITION_LABELS = "position_labels"  # (B,) relative patch position: which neighbour, 0..7
PIXELS = "pixels"  # (B, C, side, side) downsampled images, quantized by the pixel objective
PIXEL_MASK = "pixel_mask"  # (B, side * side) True on the pixels the masked-pixel model predicts
