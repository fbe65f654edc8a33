"""transferability"""
