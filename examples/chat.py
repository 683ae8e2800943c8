"""A streaming chat client for any Ember LLM endpoint.

    python examples/chat.py BASE_URL API_KEY [MODEL]

BASE_URL and API_KEY are what `ember llm serve` printed (or `ember llm serve --json` wrote).
"""

import sys

from openai import OpenAI


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
    model = sys.argv[3] if len(sys.argv) > 3 else client.models.list().data[0].id
    history = []
    print(f"Chatting with {model}; an empty line quits.")
    while question := input("> ").strip():
        history.append({"role": "user", "content": question})
        stream = client.chat.completions.create(model=model, messages=history, stream=True)
        answer = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                answer.append(chunk.choices[0].delta.content)
                print(answer[-1], end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(answer)})


if __name__ == "__main__":
    main()
