"""serkit.data.audio: downmixing, integer PCM scaling, resampling and the errors for bad files."""
import numpy as np
import pytest
import soundfile
import torch

from serkit.data.audio import AudioError, audio_info, read_audio, to_mono


def test_to_mono_scales_signed_and_unsigned_pcm_alike():
    signed = np.array([0, 16384, -16384], dtype=np.int16)
    unsigned = np.array([128, 192, 64], dtype=np.uint8)  # the same three values in 8-bit WAV coding
    assert torch.allclose(to_mono(signed), torch.tensor([0.0, 0.5, -0.5]))
    assert torch.allclose(to_mono(unsigned), torch.tensor([0.0, 0.5, -0.5]))


def test_to_mono_averages_channels_in_either_layout():
    left, right = torch.ones(1000), -torch.ones(1000) * 0.5
    channels_first = torch.stack([left, right])
    assert torch.allclose(to_mono(channels_first), torch.full((1000,), 0.25))
    assert torch.allclose(to_mono(channels_first.T), torch.full((1000,), 0.25))


def test_read_audio_downmixes_and_resamples(tmp_path):
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1), 44100)
    wav, sr = read_audio(path, target_sr=16000)
    assert sr == 16000 and wav.dim() == 1
    assert abs(wav.numel() - 16000) <= 1
    # The tone survives resampling: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.numel() - 440) < 2
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (44100, 2) and abs(info.duration - 1.0) < 1e-6


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav.*not found"):
        read_audio(tmp_path / "missing.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00junk that is not audio")
    with pytest.raises(AudioError, match="broken.wav"):
        read_audio(broken)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty.wav.*no samples"):
        read_audio(empty)
