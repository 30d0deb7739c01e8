"""``cyclegan prepare``: any source -> trainA/ trainB/ testA/ testB/ + manifest.json.

  prepare.py    the run: sources, validation and conversion of every image, the atomic swap
  sources.py    where images come from: dataset names, zips, folders, s3://, layouts and globs
  synthetic.py  the offline synthetic data set and its domain statistic
  manifest.py   the manifest's format and the content hashes steps key on
"""
