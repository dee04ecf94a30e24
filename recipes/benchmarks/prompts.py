"""The completion prompt a question is scored with: a header naming the subject, the subject's worked
examples (shots) each ending in its answer letter, then the question ending in the answer cue
("Answer:" / "答案："). The model's next token after the cue is read at the choice letters.

The same prompt for every model state (no chat template): a base model, a pre-trained one and an SFT
one are compared on the same text. With ``chat = true`` the same text also goes through the
tokenizer's chat template as one user message, and the assistant's turn starts with the cue.
"""

from __future__ import annotations

from recipes.benchmarks.layouts import LETTERS, Item

HEADER = {
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "zh": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
}
CUE = {"en": "Answer:", "zh": "答案："}
# what the answer letter looks like after the cue: " A" after "Answer:" (as MMLU's prompts have it),
# "A" right after the full-width colon (as C-Eval's have it)
LETTER_PREFIX = {"en": " ", "zh": ""}


def letter_texts(language: str, count: int = len(LETTERS)) -> list[str]:
    return [LETTER_PREFIX[language] + letter for letter in LETTERS[:count]]


def question_text(item: Item, language: str) -> str:
    """The question and its lettered choices, up to and including the cue."""
    choices = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, item.choices))
    return f"{item.question}{choices}\n{CUE[language]}"


def prompt_header(subject: str, language: str) -> str:
    """The line naming the subject that opens every prompt."""
    return HEADER[language].format(subject=subject.replace("_", " "))


def completion_prompt(item: Item, shots: list[Item], language: str) -> str:
    """The k-shot completion prompt of ``item``; it ends with the cue, the answer letter comes next."""
    worked = "".join(f"{question_text(shot, language)}{LETTER_PREFIX[language]}{LETTERS[shot.answer]}\n\n"
                     for shot in shots)
    return prompt_header(item.subject, language) + worked + question_text(item, language)


def chat_prompt(tokenizer, item: Item, shots: list[Item], language: str) -> str:
    """The same text as one user message through the tokenizer's chat template, the assistant's turn
    opened with the cue."""
    text = completion_prompt(item, shots, language)
    body = text[:-len(CUE[language])].rstrip("\n")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                             add_generation_prompt=True)
    return rendered + CUE[language]
