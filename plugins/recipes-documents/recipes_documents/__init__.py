"""Documents (PDF, DOCX, PPTX, XLSX, HTML, EPUB, Markdown) as pre-training text, through markitdown."""
