#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 and its FP32 scores on the gensim
evaluation sets, for crates/lowbit-models/tests/minilm.rs.

Reference implementation: Hugging Face transformers (BertModel, eager attention) with the
fast tokenizer read from the model's tokenizer.json, mean pooling over the attention mask and
L2 normalisation: the sentence-transformers pipeline of all-MiniLM-L6-v2
(max_seq_length 256). The script also runs sentence-transformers itself on the same texts
and checks that both agree.

Pinned versions (the project's reference environment /work/refenv):

    torch 2.5.1 (CPU), transformers 4.46.3, tokenizers 0.20.3,
    sentence-transformers 3.3.1, scipy 1.17.1, numpy 2.4.6, CPython 3.11.7

Inputs (fetched by `scripts/fetch-assets.sh minilm gensim`, read offline):

    assets/minilm/{config.json,model.safetensors,tokenizer.json,...}
    assets/gensim/{wordsim353.tsv,simlex999.txt,lee.cor,similarities0-1.txt}

Output: crates/lowbit-models/tests/data/minilm_reference.json with
  - for each test sentence: its token ids, the first 16 dimensions of its embedding, the
    sum of all 384 dimensions and the sum of i * e_i (to catch errors past dim 16);
  - the cosine of every pair of test sentences;
  - the FP32 scores on the evaluation sets, with the protocol of lowbit-eval's
    `embedding_eval`:
      WordSim-353 and SimLex-999: each word is embedded as a one-word text; the cosine of
        the two words of a pair vs the human score, Spearman (scipy.stats.spearmanr);
      Lee: the 50 documents of lee.cor (ISO-8859-1) are embedded; the cosine of every pair
        i < j vs the human similarity at row i, column j of similarities0-1.txt (the upper
        triangle without the diagonal, as gensim uses it), Pearson (scipy.stats.pearsonr).

Usage (from the repository root):

    /work/refenv/bin/python scripts/golden/minilm_reference.py

Deterministic up to float rounding of the CPU kernels; takes about a minute on 2 cores.
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("LOWBIT_ASSETS") or ROOT / "assets")
MINILM = ASSETS / "minilm"
GENSIM = ASSETS / "gensim"
OUT = ROOT / "crates/lowbit-models/tests/data/minilm_reference.json"

MAX_SEQ_LENGTH = 256
BATCH = 64

LONG = " ".join(
    f"Paragraph {i}: low-precision number formats such as FP8, MXFP4 and NVFP4 shrink "
    f"neural networks while keeping their accuracy."
    for i in range(20)
)

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The stock market fell sharply on Tuesday.",
    "Café crème, s'il vous plaît! Naïve résumé — 東京 and 北京 (Tōkyō) cost ¥3,500… ok?",
    LONG,
    "hello",
    "",
]
PARAPHRASE = (0, 1)
UNRELATED = (0, 2)


def load_model():
    tok = AutoTokenizer.from_pretrained(str(MINILM), local_files_only=True)
    model = AutoModel.from_pretrained(
        str(MINILM), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    return tok, model


def tokenize(tok, texts):
    return tok(
        texts,
        padding=True,
        truncation=True,
        max_length=MAX_SEQ_LENGTH,
        return_tensors="pt",
    )


@torch.no_grad()
def encode(tok, model, texts):
    out = []
    for s in range(0, len(texts), BATCH):
        enc = tokenize(tok, texts[s : s + BATCH])
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        e = torch.nn.functional.normalize(e, p=2, dim=1)
        out.append(e)
    return torch.cat(out).double().numpy()


def st_encode(texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(MINILM), device="cpu")
    st.max_seq_length = MAX_SEQ_LENGTH
    return st.encode(
        texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float64)


def read_pairs(path):
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, s = line.split("\t")
        pairs.append((a, b, float(s)))
    return pairs


def word_score(tok, model, pairs):
    words = sorted({w for a, b, _ in pairs for w in (a, b)})
    emb = dict(zip(words, encode(tok, model, words)))
    cos = [float(emb[a] @ emb[b]) for a, b, _ in pairs]
    human = [s for _, _, s in pairs]
    return float(scipy.stats.spearmanr(cos, human).statistic), len(pairs)


def lee_score(tok, model):
    docs = (GENSIM / "lee.cor").read_text(encoding="iso-8859-1").splitlines()
    docs = [d for d in docs if d.strip()]
    assert len(docs) == 50, len(docs)
    sims = np.loadtxt(GENSIM / "similarities0-1.txt")
    assert sims.shape == (50, 50)
    e = encode(tok, model, docs)
    c = e @ e.T
    iu = np.triu_indices(50, k=1)
    return float(scipy.stats.pearsonr(c[iu], sims[iu]).statistic), len(iu[0])


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok, model = load_model()

    emb = encode(tok, model, SENTENCES)
    st = st_encode(SENTENCES)
    gap = float(np.abs(emb - st).max())
    print(f"transformers vs sentence-transformers: max |diff| = {gap:.3g}")
    if gap > 1e-5:
        sys.exit("the two reference pipelines disagree")

    sentences = []
    for text, e in zip(SENTENCES, emb):
        ids = tokenize(tok, [text])["input_ids"][0].tolist()
        sentences.append(
            {
                "text": text,
                "ids": ids,
                "first16": [round(float(x), 8) for x in e[:16]],
                "sum": round(float(e.sum()), 8),
                "weighted_sum": round(float((np.arange(e.size) * e).sum()), 6),
            }
        )
    n = len(SENTENCES)
    cos = emb @ emb.T
    pairs = [
        {"i": i, "j": j, "cosine": round(float(cos[i, j]), 8)}
        for i in range(n)
        for j in range(i + 1, n)
    ]

    ws, ws_n = word_score(tok, model, read_pairs(GENSIM / "wordsim353.tsv"))
    sl, sl_n = word_score(tok, model, read_pairs(GENSIM / "simlex999.txt"))
    lee, lee_n = lee_score(tok, model)
    print(f"wordsim353 spearman {ws:.6f} ({ws_n} pairs)")
    print(f"simlex999 spearman {sl:.6f} ({sl_n} pairs)")
    print(f"lee pearson {lee:.6f} ({lee_n} pairs)")
    print(
        f"cos paraphrase {cos[PARAPHRASE]:.4f}, unrelated {cos[UNRELATED]:.4f}, "
        f"long text {len(sentences[4]['ids'])} ids"
    )

    out = {
        "generator": "scripts/golden/minilm_reference.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "tokenizers": __import__("tokenizers").__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "scipy": scipy.__version__,
            "numpy": np.__version__,
        },
        "max_seq_length": MAX_SEQ_LENGTH,
        "sentences": sentences,
        "paraphrase": list(PARAPHRASE),
        "unrelated": list(UNRELATED),
        "pairs": pairs,
        "wordsim353_spearman": round(ws, 8),
        "wordsim353_pairs": ws_n,
        "simlex999_spearman": round(sl, 8),
        "simlex999_pairs": sl_n,
        "lee_pearson": round(lee, 8),
        "lee_pairs": lee_n,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
