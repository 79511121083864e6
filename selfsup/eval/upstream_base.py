"""What every speech upstream is (the `Upstream` contract: its features, shape and where its
output steps lie in the audio), apart from how upstreams are loaded (selfsup/eval/upstream.py),
so that upstreams defined elsewhere (selfsup/units.py) build on it without importing the
loader."""

from __future__ import annotations

import numpy as np
from torch import nn

from selfsup.data.features import FeatureConfig
from selfsup.layers.conv_frontend import conv_output_lengths, receptive_field, total_stride


class Upstream(nn.Module):
    """What every upstream declares besides its forward: `features` (what it reads), `name`,
    `dim`, `n_layers`, `stack`, and where its output steps are (the module docstring):
    `frame_stride_samples`, `frame_offset_samples` and, for a waveform encoder, its conv front
    end `conv_layers` (which gives the number of frames)."""

    def _set_geometry(self, features: FeatureConfig, stack: int, conv_layers=None) -> None:
        self.features, self.stack = features, stack
        self.conv_layers = None if conv_layers is None else list(conv_layers)
        if self.conv_layers is not None:  # a conv front end over the samples
            self.frame_stride_samples = total_stride(self.conv_layers)
            self.frame_offset_samples = receptive_field(self.conv_layers) / 2
        else:  # spectral frames, `stack` at a time
            self.frame_stride_samples = features.hop_length * stack
            self.frame_offset_samples = features.hop_length * (stack // 2)

    @property
    def input_hop(self) -> int:
        """Samples from one input frame to the next: hop_length, or 1 for the wave."""
        return 1 if self.features.kind == "wave" else self.features.hop_length

    def n_steps(self, n_frames: int) -> int:
        """Output steps of a clip of `n_frames` input frames (samples, for the wave)."""
        if self.conv_layers is not None:
            return int(conv_output_lengths(int(n_frames), self.conv_layers))
        return -(-int(n_frames) // self.stack)

    def frame_centres(self, n_frames: int) -> np.ndarray:
        """(n_steps,) float64: the sample (at features.sample_rate, from the first sample the
        features read) each output step of a clip of `n_frames` input frames is centred on;
        never past the last input frame's centre (a stacked step whose centre frame is padding
        takes the last real frame's)."""
        j = np.arange(self.n_steps(n_frames), dtype=np.float64)
        centres = j * self.frame_stride_samples + self.frame_offset_samples
        return np.minimum(centres, (int(n_frames) - 1) * self.input_hop)


def normalises_over_time(encoder: nn.Module) -> bool:
    """Whether `encoder` holds a GroupNorm or BatchNorm (which, over a conv's frames, mix the
    frames of a clip with its padding, or the clips of a batch)."""
    norms = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, norms) for m in encoder.modules())
