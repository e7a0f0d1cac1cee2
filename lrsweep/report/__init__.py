"""Reports: a study read into pandas, statistics over seeds, figures, one section per exercise,
markdown and self-contained HTML. Never trains and never imports torch."""
