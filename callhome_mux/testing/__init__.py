"""callhome_mux.testing"""
