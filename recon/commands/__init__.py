"""Subcommands of the `recon` CLI; see recon/cli.py for the module protocol."""
