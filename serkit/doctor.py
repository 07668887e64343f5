"""Report what the installed environment provides (run at the end of tools/install.sh)."""


def main():
    import torch
    import torchaudio

    print(f"serkit doctor: torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
          f"cuda available: {torch.cuda.is_available()}")


if __name__ == "__main__":
    main()
