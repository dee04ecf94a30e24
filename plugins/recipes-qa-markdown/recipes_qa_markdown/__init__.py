"""Question/answer pairs from Markdown FAQs and 2-column CSV files, as SFT conversations."""
