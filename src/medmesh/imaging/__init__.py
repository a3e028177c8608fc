"""Imaging: DICOM instances from modalities (C-STORE, STOW-RS) filed in the patient's record,
sealed with their key; C-FIND and DICOMweb to find and read them (docs/imaging.md)."""
