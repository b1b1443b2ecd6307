"""BEANS-Zero (earthspecies/beans-zero, the dataset EarthSpeciesProject/BEANS-Zero), zero-shot, scored as its
own evaluation code scores it.

    python -m eval.beans_zero --model M --data DIR --out DIR [--components esc50,unseen-species-cmn] [--ensemble]
    python -m eval.beans_zero.make_fixture DIR      # a small copy in the published schema, synthetic audio

Files: ``data.py`` reads the local copy (Arrow / parquet, with pyarrow), ``embed.py`` embeds examples through
the evaluation embedding cache, ``scoring.py`` is beans-zero's scoring, ``runner.py`` the command,
``make_fixture.py`` the fixture writer.
"""
